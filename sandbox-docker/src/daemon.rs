//! Reaching the Docker daemon: connect, ping with a short timeout, agree on
//! an API version once.

use std::time::Duration;

use sandbox_core::Error;

use crate::client::Client;

/// How long the daemon has to answer a ping before it counts as unavailable.
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// A client for `host` (or `DOCKER_HOST`, or the local socket) that answered
/// a ping and agreed on an API version.
pub(crate) async fn connect(host: Option<&str>) -> Result<Client, Error> {
    let client = Client::connect(host)?;
    client.ping(PING_TIMEOUT).await?;
    client.negotiate(PING_TIMEOUT).await
}

/// Whether a Docker daemon answers a ping within [`PING_TIMEOUT`], at
/// `DOCKER_HOST` (`unix://` or `tcp://`) or else the local socket.
///
/// A selector uses this to pick a backend; [`probe`] says why not.
///
/// ```no_run
/// # async fn demo() {
/// if sandbox_docker::is_available().await {
///     println!("Docker answers");
/// }
/// # }
/// ```
pub async fn is_available() -> bool {
    probe().await.is_ok()
}

/// Like [`is_available`], with the reason when no daemon answers: an
/// [`Error::BackendUnavailable`] saying what to do, or [`Error::Unsupported`]
/// for a `DOCKER_HOST` this build cannot use.
///
/// ```no_run
/// # async fn demo() {
/// if let Err(error) = sandbox_docker::probe().await {
///     eprintln!("{error}");
/// }
/// # }
/// ```
pub async fn probe() -> Result<(), Error> {
    connect(None).await.map(drop)
}
