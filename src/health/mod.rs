//! Health checks run in the background, and the `/health` service.
