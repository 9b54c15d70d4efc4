use http::Request;

/// Chooses the route label a request's statistics are recorded under.
///
/// Implemented for every `Fn(&Request<B>) -> Option<&'static str>`, so
/// [`TimingLayer::route_fn`] takes a closure. The label should be a route template such as
/// `"/users/{id}"`, never the raw path: labels are static strings for that reason.
/// Returning `None` falls back to axum's `MatchedPath` (with the `axum` feature) and then
/// to [`OTHER_ROUTE`].
///
/// [`TimingLayer::route_fn`]: super::TimingLayer::route_fn
/// [`OTHER_ROUTE`]: super::OTHER_ROUTE
pub trait RouteLabel<B> {
    /// The route template of `request`, or `None` to use the fallbacks.
    fn route_label(&self, request: &Request<B>) -> Option<&'static str>;
}

impl<B, F> RouteLabel<B> for F
where
    F: Fn(&Request<B>) -> Option<&'static str>,
{
    #[inline]
    fn route_label(&self, request: &Request<B>) -> Option<&'static str> {
        self(request)
    }
}

/// The [`RouteLabel`] used unless [`TimingLayer::route_fn`] sets one: no label of its own,
/// so requests are labelled by axum's `MatchedPath` (with the `axum` feature) or as
/// [`OTHER_ROUTE`].
///
/// [`TimingLayer::route_fn`]: super::TimingLayer::route_fn
/// [`OTHER_ROUTE`]: super::OTHER_ROUTE
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultRouteLabel;

impl<B> RouteLabel<B> for DefaultRouteLabel {
    #[inline]
    fn route_label(&self, _request: &Request<B>) -> Option<&'static str> {
        None
    }
}

/// The label of `request`: from `route_label`, else from axum's `MatchedPath`, else none.
#[inline]
pub(super) fn resolve<'a, B, R>(route_label: &R, request: &'a Request<B>) -> Option<&'a str>
where
    R: RouteLabel<B>,
{
    if let Some(label) = route_label.route_label(request) {
        return Some(label);
    }
    #[cfg(feature = "axum")]
    if let Some(matched) = request.extensions().get::<axum::extract::MatchedPath>() {
        return Some(matched.as_str());
    }
    None
}
