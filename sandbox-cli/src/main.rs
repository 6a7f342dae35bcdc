//! `rlmkit-sandbox`: run untrusted Python or shell code in a sandbox.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use sandbox_cli::selector::{BackendChoice, Selector};
use sandbox_cli::serve::ServeOptions;
use sandbox_core::{
    Error, ExecutionRequest, ExecutionResult, Executor, Limits, LimitsBuilder, Status,
};

/// Exit code when the sandbox itself failed (as `docker run` does).
const SANDBOX_FAILED: u8 = 125;

#[derive(Debug, Parser)]
#[command(
    name = "rlmkit-sandbox",
    version,
    about = "Run untrusted Python or shell code in a sandbox"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Run a program and pass its output through (or print one JSON object with --json).
    Run(Box<RunArgs>),
    /// Say, for each backend, whether it is available here and which protections it enforces.
    Doctor {
        /// Print one JSON object instead of words.
        #[arg(long)]
        json: bool,
    },
    /// Remove sandbox containers (label rlmkit.sandbox) whose owner process is gone.
    Gc {
        /// Print the removed containers as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve JSON-RPC 2.0 requests, one JSON object per line, over stdin and stdout.
    ///
    /// Methods: execute, session.open, session.run, session.put_file,
    /// session.get_file, session.close, doctor. The backend and limit flags
    /// are the defaults of every request. At end of input every session is
    /// closed and the server exits 0.
    Serve(Box<ServeArgs>),
    /// Manage the Docker backend's image.
    Image {
        #[command(subcommand)]
        command: ImageCommands,
    },
}

#[derive(Debug, Subcommand)]
enum ImageCommands {
    /// Build the sandbox image through the Docker API, streaming progress.
    Build {
        /// The image name and tag.
        #[arg(long, default_value = sandbox_docker::DEFAULT_IMAGE)]
        image: String,
    },
}

/// The flags of `serve`.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Speak JSON-RPC over stdin and stdout (the one transport so far).
    #[arg(long)]
    stdio: bool,

    /// At end of input (or SIGINT/SIGTERM), how long in-flight requests may
    /// take to finish before they are cancelled, e.g. 5s; sessions are
    /// closed at once either way.
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    shutdown_grace: String,

    #[command(flatten)]
    executor: ExecutorArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Lang {
    Python,
    Shell,
}

/// The backend and the default limits: the same flags for `run` and `serve`.
#[derive(Debug, clap::Args)]
struct ExecutorArgs {
    /// Which backend runs the code: auto, docker or restricted.
    #[arg(long, env = "RLMKIT_SANDBOX_BACKEND", default_value = "auto")]
    backend: String,

    /// The Docker image (default: rlmkit-sandbox:<version>).
    #[arg(long)]
    image: Option<String>,

    /// The Docker runtime, e.g. runsc (default: the daemon's).
    #[arg(long)]
    runtime: Option<String>,

    /// Memory limit, e.g. 512m or 1g.
    #[arg(long, allow_hyphen_values = true)]
    memory: Option<String>,

    /// CPU limit, e.g. 1 or 1.5.
    #[arg(long, allow_hyphen_values = true)]
    cpus: Option<String>,

    /// Wall-clock timeout, e.g. 30s or 500ms.
    #[arg(long, allow_hyphen_values = true)]
    timeout: Option<String>,

    /// Maximum processes and threads.
    #[arg(long)]
    pids: Option<u32>,

    /// Network: none or bridge.
    #[arg(long)]
    network: Option<String>,

    /// Cap on stdout and on stderr each, e.g. 1m.
    #[arg(long, allow_hyphen_values = true)]
    output_limit: Option<String>,

    /// Cap on scratch space, e.g. 64m.
    #[arg(long, allow_hyphen_values = true)]
    scratch: Option<String>,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The program's source file, or `-` to read it from stdin.
    #[arg(conflicts_with = "code")]
    source: Option<PathBuf>,

    /// The program's source, given inline.
    #[arg(long, short = 'c')]
    code: Option<String>,

    /// The language (default: shell for a `.sh` file, python otherwise).
    #[arg(long, value_enum)]
    lang: Option<Lang>,

    #[command(flatten)]
    executor: ExecutorArgs,

    /// An environment variable for the program, NAME=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_name = "NAME=VALUE")]
    env: Vec<String>,

    /// A local file to place in the working directory, LOCAL[:DEST] (repeatable).
    #[arg(long = "file", short = 'f', value_name = "LOCAL[:DEST]")]
    files: Vec<String>,

    /// A file whose bytes are fed to the program's stdin, or `-` for this command's stdin.
    #[arg(long, value_name = "PATH|-")]
    stdin: Option<PathBuf>,

    /// Print one JSON object with the result instead of passing output through.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // Usage errors are the sandbox's own failures: 125, as `docker run` does.
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(SANDBOX_FAILED)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Commands::Run(args) => run(*args).await,
        Commands::Doctor { json } => doctor(json).await,
        Commands::Gc { json } => gc(json).await,
        Commands::Serve(args) => serve(*args).await,
        Commands::Image {
            command: ImageCommands::Build { image },
        } => build_image(&image).await,
    }
}

async fn doctor(json: bool) -> ExitCode {
    let diagnosis = sandbox_cli::doctor::diagnose().await;
    if json {
        match serde_json::to_string(&diagnosis) {
            Ok(body) => println!("{body}"),
            Err(e) => return fail(&format!("cannot encode the diagnosis: {e}")),
        }
    } else {
        print!("{diagnosis}");
    }
    if diagnosis.auto.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(SANDBOX_FAILED)
    }
}

async fn gc(json: bool) -> ExitCode {
    match sandbox_docker::gc().await {
        Ok(removed) if json => match serde_json::to_string(&removed) {
            Ok(body) => {
                println!("{body}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&format!("cannot encode the result: {e}")),
        },
        Ok(removed) => {
            for container in &removed {
                println!(
                    "removed {} ({}, owner pid {})",
                    container.name,
                    container.state,
                    container
                        .owner_pid
                        .map_or("unknown".to_owned(), |pid| pid.to_string())
                );
            }
            eprintln!(
                "rlmkit-sandbox: removed {} leftover container(s)",
                removed.len()
            );
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error.to_string()),
    }
}

async fn build_image(image: &str) -> ExitCode {
    eprintln!("rlmkit-sandbox: building {image} through the Docker API");
    match sandbox_docker::build_image(image, |line| eprintln!("{line}")).await {
        Ok(()) => {
            eprintln!("rlmkit-sandbox: built {image}");
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error.to_string()),
    }
}

/// `serve --stdio`: answers requests until end of input or SIGINT/SIGTERM.
async fn serve(args: ServeArgs) -> ExitCode {
    if !args.stdio {
        return fail("serve needs --stdio (JSON-RPC over stdin and stdout is the one transport)");
    }
    let grace = match sandbox_core::units::parse_duration("shutdown-grace", &args.shutdown_grace) {
        Ok(grace) => grace,
        Err(error) => return fail(&error.to_string()),
    };
    let executor = match args.executor.selector() {
        Ok(selector) => match select(selector).await {
            Ok(executor) => executor,
            Err(error) => return fail(&error.to_string()),
        },
        Err(error) => return fail(&error.to_string()),
    };
    let options = ServeOptions::default().shutdown_grace(grace);
    let executor: std::sync::Arc<dyn Executor> = std::sync::Arc::from(executor);
    let served = sandbox_cli::serve::serve(
        executor.clone(),
        tokio::io::stdin(),
        tokio::io::stdout(),
        sandbox_cli::serve::termination(),
        options,
    )
    .await;
    let code = match served {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("rlmkit-sandbox: {error}");
            i32::from(SANDBOX_FAILED)
        }
    };
    if let Err(error) = executor.shutdown().await {
        eprintln!("rlmkit-sandbox: {error}");
    }
    // Every response is written and every session closed. Exit now rather
    // than wait for the runtime to join a stdin read still blocked after a
    // signal.
    std::process::exit(code)
}

fn fail(message: &str) -> ExitCode {
    eprintln!("rlmkit-sandbox: {message}");
    ExitCode::from(SANDBOX_FAILED)
}

async fn run(args: RunArgs) -> ExitCode {
    let json = args.json;
    match try_run(args).await {
        Ok(result) => report(&result, json),
        Err(error) => {
            if json {
                let body = serde_json::json!({ "error": { "message": error.to_string(), "kind": error.kind() } });
                println!("{body}");
            }
            eprintln!("rlmkit-sandbox: {error}");
            ExitCode::from(SANDBOX_FAILED)
        }
    }
}

async fn try_run(args: RunArgs) -> Result<ExecutionResult, Error> {
    // One run: no warm containers to start and remove.
    let selector = args.executor.selector()?.pool_size(0);
    let request = request(&args)?;
    let executor = select(selector).await?;
    executor.execute(request).await
}

impl ExecutorArgs {
    /// The limits the flags give, over the defaults.
    fn limits(&self) -> Result<Limits, Error> {
        let mut builder = LimitsBuilder::default();
        if let Some(memory) = &self.memory {
            builder = builder.memory(memory)?;
        }
        if let Some(cpus) = &self.cpus {
            builder = builder.cpus_str(cpus)?;
        }
        if let Some(timeout) = &self.timeout {
            builder = builder.timeout_str(timeout)?;
        }
        if let Some(pids) = self.pids {
            builder = builder.pids(pids);
        }
        if let Some(network) = &self.network {
            builder = builder.network(network.parse()?);
        }
        if let Some(output) = &self.output_limit {
            builder = builder.output(output)?;
        }
        if let Some(scratch) = &self.scratch {
            builder = builder.scratch(scratch)?;
        }
        builder.build()
    }

    /// A selector for the backend, image, runtime and limits the flags give,
    /// all checked; nothing is started yet.
    fn selector(&self) -> Result<Selector, Error> {
        let limits = self.limits()?;
        let backend: BackendChoice = self.backend.parse()?;
        let mut selector = Selector::new(backend).limits(limits);
        if let Some(image) = &self.image {
            selector = selector.image(image);
        }
        if let Some(runtime) = &self.runtime {
            selector = selector.runtime(runtime);
        }
        Ok(selector)
    }
}

/// Builds the executor, telling on stderr why when `auto` picked a fallback.
async fn select(selector: Selector) -> Result<Box<dyn Executor>, Error> {
    let selection = selector.select().await?;
    if let Some(notice) = &selection.notice {
        eprintln!("rlmkit-sandbox: {notice}");
    }
    Ok(selection.executor)
}

fn request(args: &RunArgs) -> Result<ExecutionRequest, Error> {
    let source = match (&args.code, &args.source) {
        (Some(code), _) => code.clone(),
        (None, Some(path)) if path == Path::new("-") => {
            let mut source = String::new();
            std::io::stdin()
                .read_to_string(&mut source)
                .map_err(|e| Error::io("reading the program from stdin (it must be UTF-8)", e))?;
            source
        }
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading the program {}", path.display()), e))?,
        (None, None) => {
            return Err(Error::invalid_request(
                "no program given; pass a FILE, `-` for stdin, or --code CODE",
            ));
        }
    };
    let is_shell_file = args
        .source
        .as_ref()
        .is_some_and(|path| path.extension().is_some_and(|ext| ext == "sh"));
    let lang = args.lang.unwrap_or(if is_shell_file {
        Lang::Shell
    } else {
        Lang::Python
    });
    let mut request = match lang {
        Lang::Python => ExecutionRequest::python(source),
        Lang::Shell => ExecutionRequest::shell(source),
    };
    for pair in &args.env {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| Error::invalid_request(format!("--env {pair:?} must be NAME=VALUE")))?;
        request = request.env(name, value);
    }
    for spec in &args.files {
        let (local, dest) = match spec.split_once(':') {
            Some((local, dest)) => (PathBuf::from(local), dest.to_owned()),
            None => {
                let local = PathBuf::from(spec);
                let name = local
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .ok_or_else(|| {
                        Error::invalid_request(format!("--file {spec:?} names no file"))
                    })?;
                (local, name)
            }
        };
        let contents = std::fs::read(&local)
            .map_err(|e| Error::io(format!("reading --file {}", local.display()), e))?;
        request = request.file(dest, contents);
    }
    if let Some(path) = &args.stdin {
        let bytes = if path == Path::new("-") {
            if args.source.as_deref() == Some(Path::new("-")) {
                return Err(Error::invalid_request(
                    "stdin cannot hold both the program and its input; use --code or a FILE",
                ));
            }
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|e| Error::io("reading stdin", e))?;
            bytes
        } else {
            std::fs::read(path)
                .map_err(|e| Error::io(format!("reading --stdin {}", path.display()), e))?
        };
        request = request.stdin(bytes);
    }
    request.validate()?;
    Ok(request)
}

fn report(result: &ExecutionResult, json: bool) -> ExitCode {
    if json {
        match serde_json::to_string(result) {
            Ok(body) => println!("{body}"),
            Err(e) => {
                eprintln!("rlmkit-sandbox: cannot encode the result: {e}");
                return ExitCode::from(SANDBOX_FAILED);
            }
        }
        return ExitCode::SUCCESS;
    }
    // A closed pipe on our side must not turn into a sandbox failure.
    let _ = std::io::stdout().write_all(&result.stdout);
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().write_all(&result.stderr);
    let why = match result.status {
        Status::TimedOut => Some(format!("timed out after {:?}", result.duration)),
        Status::OomKilled => Some("killed: out of memory".to_owned()),
        Status::OutputLimitExceeded => Some("stopped: output limit exceeded".to_owned()),
        Status::Killed => Some("killed by the sandbox".to_owned()),
        Status::Signaled => Some(format!("killed by signal {}", result.signal.unwrap_or(0))),
        _ => None,
    };
    for (name, truncated) in [
        ("stdout", result.stdout_truncated),
        ("stderr", result.stderr_truncated),
    ] {
        if truncated {
            eprintln!("rlmkit-sandbox: {name} truncated at the output limit");
        }
    }
    if let Some(why) = why {
        eprintln!("rlmkit-sandbox: {why}");
    }
    ExitCode::from(u8::try_from(result.shell_exit_code()).unwrap_or(SANDBOX_FAILED))
}
