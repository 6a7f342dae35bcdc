//! The sandbox image: checking that it exists and building it through the
//! Docker API from `docker/Dockerfile.sandbox` (embedded in this crate).

use std::collections::HashMap;

use sandbox_core::Error;

use crate::BACKEND;
use crate::client::Client;

/// The image executors use unless told otherwise: `rlmkit-sandbox:<crate version>`.
pub const DEFAULT_IMAGE: &str = concat!("rlmkit-sandbox:", env!("CARGO_PKG_VERSION"));

/// The base image `docker/build-image.sh` makes with debootstrap (python3 and
/// numpy included); [`build_image`] builds `FROM` it when it exists locally.
pub const BASE_IMAGE: &str = "rlmkit-sandbox-base:bookworm";

/// The command that builds the image on a machine without a registry.
pub const BUILD_COMMAND: &str = "docker/build-image.sh";

/// `docker/Dockerfile.sandbox`, the recipe of the sandbox image.
pub const DOCKERFILE: &str = include_str!("../../docker/Dockerfile.sandbox");

/// Builds the sandbox image `image` through the Docker API (the daemon at
/// `DOCKER_HOST`, else the local socket), passing each line of build output
/// to `progress`.
///
/// The Dockerfile is [`DOCKERFILE`]; when [`BASE_IMAGE`] exists on the
/// daemon it is the base (build arg `BASE`), so no registry is needed.
/// Otherwise the build pulls `debian:bookworm-slim` and installs python3
/// and numpy with apt. Fails with [`Error::BackendUnavailable`] naming
/// [`BUILD_COMMAND`] when the build cannot succeed here.
///
/// ```no_run
/// # async fn demo() -> Result<(), sandbox_core::Error> {
/// sandbox_docker::build_image(sandbox_docker::DEFAULT_IMAGE, |line| eprintln!("{line}")).await?;
/// # Ok(())
/// # }
/// ```
pub async fn build_image(image: &str, mut progress: impl FnMut(&str) + Send) -> Result<(), Error> {
    let client = crate::daemon::connect(None).await?;
    build(&client, image, &mut progress).await
}

/// Whether `image` names the sandbox image (repository `rlmkit-sandbox`,
/// any tag), which this crate knows how to build.
fn is_sandbox_image(image: &str) -> bool {
    let repository = match image.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => repository,
        _ => image,
    };
    repository == "rlmkit-sandbox" || repository.ends_with("/rlmkit-sandbox")
}

/// Checks that `image` exists, building it when it does not, it is the
/// sandbox image, and `auto_build` allows.
///
/// A missing image of another name is a [`Error::Configuration`]: building
/// the sandbox recipe under a name the caller chose would hide their mistake.
pub(crate) async fn ensure(client: &Client, image: &str, auto_build: bool) -> Result<(), Error> {
    if client.image_exists(image).await? {
        return Ok(());
    }
    if !is_sandbox_image(image) {
        return Err(Error::Configuration {
            backend: BACKEND.to_owned(),
            reason: format!(
                "the image {image} is not on the Docker daemon at {}; pull or build it, or leave the image unset to use {DEFAULT_IMAGE} (built by `{BUILD_COMMAND}`)",
                client.address()
            ),
        });
    }
    if !auto_build {
        return Err(Error::unavailable(
            BACKEND,
            format!(
                "the image {image} is not on the Docker daemon at {}; build it with `{BUILD_COMMAND}` (or let the executor build it: DockerExecutorBuilder::auto_build(true))",
                client.address()
            ),
        ));
    }
    let mut ignore = |_: &str| {};
    build(client, image, &mut ignore).await
}

/// Builds `image` on the daemon behind `client`.
pub(crate) async fn build(
    client: &Client,
    image: &str,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), Error> {
    let mut build_args = HashMap::new();
    if client.image_exists(BASE_IMAGE).await? {
        build_args.insert("BASE".to_owned(), BASE_IMAGE.to_owned());
    }
    let context = context_tar()?;
    let built = client
        .build_image(image, context, &build_args, progress)
        .await;
    let unavailable = |why: String, source: Option<Error>| Error::BackendUnavailable {
        backend: BACKEND.to_owned(),
        reason: format!(
            "the image {image} is missing and building it through the Docker API failed ({why}); build it with `{BUILD_COMMAND}`, which needs no registry"
        ),
        source: source.map(|e| Box::new(e) as _),
    };
    match built {
        Ok(()) if client.image_exists(image).await? => Ok(()),
        Ok(()) => Err(unavailable(
            "the build ended without the image".to_owned(),
            None,
        )),
        Err(error) => Err(unavailable(error.to_string(), Some(error))),
    }
}

/// The build context: the Dockerfile alone (it copies nothing in).
fn context_tar() -> Result<Vec<u8>, Error> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(DOCKERFILE.len() as u64);
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_data(&mut header, "Dockerfile", DOCKERFILE.as_bytes())
        .and_then(|()| builder.into_inner())
        .map_err(|e| Error::io("packing the Dockerfile into a build context", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_holds_the_dockerfile() {
        let tar = context_tar().unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let mut entries = archive.entries().unwrap();
        let mut entry = entries.next().unwrap().unwrap();
        assert_eq!(entry.path().unwrap().to_str(), Some("Dockerfile"));
        let mut text = String::new();
        std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
        assert_eq!(text, DOCKERFILE);
        assert!(DOCKERFILE.contains("ARG BASE"));
        assert!(entries.next().is_none());
    }

    #[test]
    fn only_the_sandbox_repository_is_built_on_demand() {
        for ours in [
            "rlmkit-sandbox:0.1.0",
            "rlmkit-sandbox",
            "registry:5000/team/rlmkit-sandbox:x",
        ] {
            assert!(is_sandbox_image(ours), "{ours}");
        }
        for theirs in [
            "python:3.12",
            "nope:1",
            "rlmkit-sandbox-base:bookworm",
            "registry:5000/other",
        ] {
            assert!(!is_sandbox_image(theirs), "{theirs}");
        }
    }

    #[test]
    fn the_default_image_is_versioned() {
        assert_eq!(
            DEFAULT_IMAGE,
            format!("rlmkit-sandbox:{}", env!("CARGO_PKG_VERSION"))
        );
    }
}
