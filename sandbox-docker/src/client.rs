//! The one place that talks to the Docker daemon: every bollard call of the
//! crate goes through [`Client`], which turns bollard's errors into
//! [`sandbox_core::Error`]s that say what was being done and what to do.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, ContainerSummary};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, BuildImageOptionsBuilder, CreateContainerOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use futures_util::{Stream, StreamExt};
use sandbox_core::Error;
use tokio::io::AsyncWrite;

use crate::BACKEND;

/// Where bollard connects when neither the builder nor `DOCKER_HOST` says otherwise.
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// A chunk of the program's output, as the attach stream delivers it.
#[derive(Debug)]
pub(crate) enum Chunk {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

impl Chunk {
    fn from_log(output: LogOutput) -> Option<Chunk> {
        match output {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                Some(Chunk::Stdout(message.to_vec()))
            }
            LogOutput::StdErr { message } => Some(Chunk::Stderr(message.to_vec())),
            LogOutput::StdIn { .. } => None,
        }
    }
}

/// The output half of an attached container.
pub(crate) type OutputStream = Pin<Box<dyn Stream<Item = Result<Chunk, Error>> + Send>>;

/// The input half of an attached container (present when stdin was attached).
pub(crate) type InputSink = Pin<Box<dyn AsyncWrite + Send>>;

/// Both halves of an attached container.
pub(crate) struct Attached {
    pub output: OutputStream,
    pub input: Option<InputSink>,
}

/// How a container ended, from `inspect_container`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExitState {
    /// Whether it still runs.
    pub running: bool,
    /// The exit code of its init process (128 + N after signal N).
    pub exit_code: i64,
    /// Whether the kernel's OOM killer struck inside it.
    pub oom_killed: bool,
}

/// What the daemon offers, read once when an executor is built.
#[derive(Debug, Clone, Default)]
pub(crate) struct DaemonFacts {
    /// The OCI runtimes the daemon knows.
    pub runtimes: Vec<String>,
    /// The daemon's default runtime.
    pub default_runtime: Option<String>,
    /// Whether the daemon applies seccomp profiles (so it takes ours).
    pub seccomp: bool,
    /// Whether the daemon remaps users into a user namespace.
    pub userns: bool,
    /// Whether the daemon runs rootless.
    pub rootless: bool,
    /// The daemon's CPU count, which caps `nano_cpus`.
    pub cpus: Option<u32>,
}

/// A container found by its `rlmkit.sandbox` label.
#[derive(Debug, Clone)]
pub(crate) struct Labelled {
    pub id: String,
    pub name: String,
    pub state: String,
    pub labels: HashMap<String, String>,
}

/// The crate's Docker client: a shared, version-negotiated bollard connection.
#[derive(Clone, Debug)]
pub(crate) struct Client {
    docker: Docker,
    address: String,
}

impl Client {
    /// A client for `host` (`unix://`, `tcp://` or `http://`), or for
    /// `DOCKER_HOST` and then the local socket when `host` is `None`.
    /// Nothing is sent to the daemon yet.
    pub fn connect(host: Option<&str>) -> Result<Client, Error> {
        // As the docker CLI does, an empty DOCKER_HOST counts as unset.
        let from_env = std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty());
        let address = host
            .map(str::to_owned)
            .or(from_env)
            .unwrap_or_else(|| DEFAULT_HOST.to_owned());
        let connected = Docker::connect_with_host(&address);
        let docker = connected.map_err(|error| match error {
            DockerError::UnsupportedURISchemeError { .. } => Error::Unsupported {
                backend: BACKEND.to_owned(),
                feature: format!(
                    "the Docker address {address:?}; use unix:///path/to/docker.sock, tcp://HOST:PORT or http://HOST:PORT"
                ),
            },
            DockerError::SocketNotFoundError(path) => Error::BackendUnavailable {
                backend: BACKEND.to_owned(),
                reason: format!(
                    "no Docker socket at {path}: start the Docker daemon (e.g. `sudo systemctl start docker`), or point DOCKER_HOST at one (rootless Docker: unix://$XDG_RUNTIME_DIR/docker.sock)"
                ),
                source: None,
            },
            other => Error::BackendUnavailable {
                backend: BACKEND.to_owned(),
                reason: format!("cannot connect to the Docker daemon at {address}: {other}"),
                source: Some(Box::new(other)),
            },
        })?;
        Ok(Client { docker, address })
    }

    /// The daemon's address, for messages.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Pings the daemon; no answer within `timeout` means it is unavailable.
    pub async fn ping(&self, timeout: Duration) -> Result<(), Error> {
        let unavailable = |why: String, source: Option<DockerError>| Error::BackendUnavailable {
            backend: BACKEND.to_owned(),
            reason: format!(
                "the Docker daemon at {} {why}: start it (e.g. `sudo systemctl start docker`), check that this user may use it, or point DOCKER_HOST at one that runs",
                self.address
            ),
            source: source.map(|e| Box::new(e) as _),
        };
        match tokio::time::timeout(timeout, self.docker.ping()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(unavailable(
                format!("did not answer a ping ({error})"),
                Some(error),
            )),
            Err(_) => Err(unavailable(
                format!("did not answer a ping within {timeout:?}"),
                None,
            )),
        }
    }

    /// Agrees on an API version with the daemon (this machine's speaks only 1.41).
    pub async fn negotiate(self, timeout: Duration) -> Result<Client, Error> {
        let Client { docker, address } = self;
        match tokio::time::timeout(timeout, docker.negotiate_version()).await {
            Ok(Ok(docker)) => Ok(Client { docker, address }),
            Ok(Err(error)) => Err(Error::BackendUnavailable {
                backend: BACKEND.to_owned(),
                reason: format!(
                    "the Docker daemon at {address} did not agree on an API version: {error}"
                ),
                source: Some(Box::new(error)),
            }),
            Err(_) => Err(Error::unavailable(
                BACKEND,
                format!(
                    "the Docker daemon at {address} did not report its version within {timeout:?}"
                ),
            )),
        }
    }

    /// What the daemon offers: runtimes, seccomp, user namespaces, CPUs.
    pub async fn facts(&self) -> Result<DaemonFacts, Error> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| failed("reading the daemon's info", e))?;
        let mut runtimes: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
        runtimes.sort();
        let options = info.security_options.unwrap_or_default();
        let has = |name: &str| options.iter().any(|o| o.contains(&format!("name={name}")));
        Ok(DaemonFacts {
            runtimes,
            default_runtime: info.default_runtime,
            seccomp: has("seccomp"),
            userns: has("userns"),
            rootless: has("rootless"),
            cpus: info
                .ncpu
                .and_then(|n| u32::try_from(n).ok())
                .filter(|&n| n > 0),
        })
    }

    /// Whether `image` exists on the daemon.
    pub async fn image_exists(&self, image: &str) -> Result<bool, Error> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(error) if status(&error) == Some(404) => Ok(false),
            Err(error) => Err(failed(&format!("looking up the image {image}"), error)),
        }
    }

    /// Builds `tag` from a build context tar, passing each progress line to `progress`.
    pub async fn build_image(
        &self,
        tag: &str,
        context: Vec<u8>,
        build_args: &HashMap<String, String>,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), Error> {
        let options = BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .t(tag)
            .rm(true)
            .forcerm(true)
            .buildargs(build_args)
            .build();
        let mut stream =
            self.docker
                .build_image(options, None, Some(bollard::body_full(context.into())));
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| failed(&format!("building the image {tag}"), e))?;
            for line in [info.stream, info.status].into_iter().flatten() {
                for line in line.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
                    progress(line);
                }
            }
        }
        Ok(())
    }

    /// Creates a container named `name`.
    pub async fn create(&self, name: &str, body: ContainerCreateBody) -> Result<(), Error> {
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        match self.docker.create_container(Some(options), body).await {
            Ok(_) => Ok(()),
            Err(error) => Err(create_failed(error)),
        }
    }

    /// Extracts a tar archive into `path` of a (created, not yet started) container.
    pub async fn upload(&self, name: &str, path: &str, tar: Vec<u8>) -> Result<(), Error> {
        let options = UploadToContainerOptionsBuilder::default()
            .path(path)
            .build();
        self.docker
            .upload_to_container(name, Some(options), bollard::body_full(tar.into()))
            .await
            .map_err(|e| failed("copying the code and input files into the container", e))
    }

    /// Attaches to stdout and stderr (and stdin when `stdin`) before the start.
    pub async fn attach(&self, name: &str, stdin: bool) -> Result<Attached, Error> {
        let options = AttachContainerOptionsBuilder::default()
            .stream(true)
            .stdout(true)
            .stderr(true)
            .stdin(stdin)
            .build();
        let attached = self
            .docker
            .attach_container(name, Some(options))
            .await
            .map_err(|e| failed("attaching to the container", e))?;
        let output = attached.output.filter_map(|item| async move {
            match item {
                Ok(output) => Chunk::from_log(output).map(Ok),
                Err(error) => Some(Err(failed("reading the program's output", error))),
            }
        });
        Ok(Attached {
            output: Box::pin(output),
            input: stdin.then_some(attached.input),
        })
    }

    /// Starts a created container.
    pub async fn start(&self, name: &str) -> Result<(), Error> {
        self.docker
            .start_container(name, None)
            .await
            .map_err(|e| failed("starting the container", e))
    }

    /// Sends SIGKILL to every process of the container; a container that is
    /// already gone or stopped is fine.
    pub async fn kill(&self, name: &str) -> Result<(), Error> {
        let options = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        match self.docker.kill_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(error) if matches!(status(&error), Some(404 | 409)) => Ok(()),
            Err(error) => Err(failed("killing the container", error)),
        }
    }

    /// Waits until the container is not running and returns the exit code
    /// the daemon reports, if any (bollard reports a non-zero exit as an
    /// error: that is an exit too). [`Client::exit_state`] tells an OOM kill.
    pub async fn wait(&self, name: &str) -> Result<Option<i64>, Error> {
        let mut stream = self.docker.wait_container(name, None);
        match stream.next().await {
            Some(Ok(response)) => Ok(Some(response.status_code)),
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Ok(Some(code)),
            None => Ok(None),
            Some(Err(error)) => Err(failed("waiting for the container to stop", error)),
        }
    }

    /// How the container ended.
    pub async fn exit_state(&self, name: &str) -> Result<ExitState, Error> {
        let inspected = self
            .docker
            .inspect_container(name, None)
            .await
            .map_err(|e| failed("inspecting the stopped container", e))?;
        let state = inspected.state.unwrap_or_default();
        Ok(ExitState {
            running: state.running.unwrap_or(false),
            exit_code: state.exit_code.unwrap_or(-1),
            oom_killed: state.oom_killed.unwrap_or(false),
        })
    }

    /// Removes the container and its anonymous volumes, killing it first if it
    /// runs. A container already gone (or being removed) is fine.
    pub async fn remove(&self, name: &str) -> Result<(), Error> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(error) if status(&error) == Some(404) => Ok(()),
            Err(error) if status(&error) == Some(409) && in_progress(&error) => Ok(()),
            Err(error) => Err(failed(
                &format!(
                    "removing the container {name} (run `docker rm -fv {name}` to remove it by hand)"
                ),
                error,
            )),
        }
    }

    /// Runs `argv` as `user` in the running container `name` and returns at
    /// most `limit` bytes of its stdout, within `timeout` (then whatever
    /// came). For rare recoveries only, never per request.
    pub async fn exec_output(
        &self,
        name: &str,
        argv: &[&str],
        user: &str,
        limit: usize,
        timeout: Duration,
    ) -> Result<Vec<u8>, Error> {
        use bollard::exec::StartExecResults;
        use bollard::models::ExecConfig;

        let config = ExecConfig {
            attach_stdout: Some(true),
            attach_stderr: Some(false),
            cmd: Some(argv.iter().map(|a| (*a).to_owned()).collect()),
            user: Some(user.to_owned()),
            ..ExecConfig::default()
        };
        let run = async {
            let created = self
                .docker
                .create_exec(name, config)
                .await
                .map_err(|e| failed("starting a command in the container", e))?;
            let started = self
                .docker
                .start_exec(&created.id, None)
                .await
                .map_err(|e| failed("starting a command in the container", e))?;
            let mut kept = Vec::new();
            if let StartExecResults::Attached { mut output, .. } = started {
                while let Some(Ok(item)) = output.next().await {
                    if let Some(Chunk::Stdout(bytes)) = Chunk::from_log(item) {
                        let room = limit.saturating_sub(kept.len());
                        kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
                        if kept.len() >= limit {
                            break;
                        }
                    }
                }
            }
            Ok(kept)
        };
        tokio::time::timeout(timeout, run)
            .await
            .unwrap_or_else(|_| {
                Err(Error::unavailable(
                    BACKEND,
                    format!("a command in the container did not finish within {timeout:?}"),
                ))
            })
    }

    /// Every container (running or not) carrying the label `label`.
    pub async fn list_labelled(&self, label: &str) -> Result<Vec<Labelled>, Error> {
        let filters = HashMap::from([("label", vec![label])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| failed("listing the sandbox containers", e))?;
        Ok(containers.into_iter().map(labelled).collect())
    }
}

fn labelled(summary: ContainerSummary) -> Labelled {
    let name = summary
        .names
        .unwrap_or_default()
        .into_iter()
        .next()
        .map(|n| n.trim_start_matches('/').to_owned())
        .unwrap_or_default();
    Labelled {
        id: summary.id.unwrap_or_default(),
        name,
        state: summary.state.map(|s| s.to_string()).unwrap_or_default(),
        labels: summary.labels.unwrap_or_default(),
    }
}

/// The HTTP status of a daemon's error answer.
fn status(error: &DockerError) -> Option<u16> {
    match error {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn in_progress(error: &DockerError) -> bool {
    matches!(error, DockerError::DockerResponseServerError { message, .. } if message.contains("in progress"))
}

/// Whether the error means the connection to the daemon failed (as opposed
/// to the daemon refusing a request).
fn is_connection(error: &DockerError) -> bool {
    matches!(
        error,
        DockerError::IOError { .. }
            | DockerError::HyperResponseError { .. }
            | DockerError::HyperLegacyError { .. }
            | DockerError::RequestTimeoutError
            | DockerError::SocketNotFoundError(_)
    )
}

/// An [`Error::Backend`] for a failed bollard call, saying what was being done.
pub(crate) fn failed(doing: &str, error: DockerError) -> Error {
    let message = match &error {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => {
            format!("{doing}: the Docker daemon answered {status_code}: {message}")
        }
        e if is_connection(e) => format!(
            "{doing}: the connection to the Docker daemon failed ({e}); check that the daemon still runs"
        ),
        e => format!("{doing}: {e}"),
    };
    Error::backend(BACKEND, message, error)
}

/// Container creation errors, with the misconfigurations named.
fn create_failed(error: DockerError) -> Error {
    if let DockerError::DockerResponseServerError {
        status_code,
        message,
    } = &error
    {
        let lower = message.to_ascii_lowercase();
        if lower.contains("unknown runtime") {
            return Error::ProtectionUnavailable {
                backend: BACKEND.to_owned(),
                protection: "the requested container runtime".to_owned(),
                reason: format!(
                    "{message}; install the runtime and register it in the daemon's daemon.json, or build the executor without .runtime(..)"
                ),
            };
        }
        if *status_code == 404 && lower.contains("no such image") {
            return Error::unavailable(
                BACKEND,
                format!(
                    "{message}; build the image with `{}` (or enable auto_build)",
                    crate::image::BUILD_COMMAND
                ),
            );
        }
    }
    failed("creating the container", error)
}
