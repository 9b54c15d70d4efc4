//! [`check_fn`]: a check from a closure.

use std::{fmt, future::Future};

use async_trait::async_trait;

use super::{CheckError, HealthCheck, Label};

/// A [`HealthCheck`] named `name` that runs `check`.
///
/// The check is critical; call [`CheckFn::non_critical`] for one the service can work
/// without.
///
/// ```
/// use perfkit::health::{CheckError, check_fn};
///
/// let queue = check_fn("queue", || async {
///     let depth = 12_u32;
///     if depth > 10_000 {
///         return Err(CheckError::new(format!("{depth} jobs waiting")));
///     }
///     Ok(())
/// })
/// .non_critical();
/// ```
pub fn check_fn<F, Fut>(name: impl Into<String>, check: F) -> CheckFn<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), CheckError>> + Send,
{
    CheckFn {
        label: Label::new(name, true),
        check,
    }
}

/// A [`HealthCheck`] built from a closure by [`check_fn`].
#[must_use]
pub struct CheckFn<F> {
    label: Label,
    check: F,
}

label_setters!(impl[F] CheckFn<F>, default = "the name given to [`check_fn`]");

impl<F> fmt::Debug for CheckFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.label
            .fields(&mut f.debug_struct("CheckFn"))
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<F, Fut> HealthCheck for CheckFn<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), CheckError>> + Send,
{
    label_accessors!();

    async fn check(&self) -> Result<(), CheckError> {
        (self.check)().await
    }
}
