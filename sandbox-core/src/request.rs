//! What to run: the program, its input and its limits.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use crate::{Error, LimitsBuilder, bytes};

/// The program an execution runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "source", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Program {
    /// Python 3 source, run by the sandbox's `python3`.
    Python(String),
    /// A POSIX shell script, run by the sandbox's `sh`.
    Shell(String),
    /// A command and its arguments, looked up on the sandbox's `PATH`.
    Command(Vec<String>),
}

impl Program {
    /// A short name for messages: `python`, `shell` or `command`.
    pub fn kind(&self) -> &'static str {
        match self {
            Program::Python(_) => "python",
            Program::Shell(_) => "shell",
            Program::Command(_) => "command",
        }
    }
}

/// A file placed in the sandbox's working directory before the program starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InputFile {
    /// Path relative to the working directory, e.g. `data/input.csv`.
    pub path: String,
    /// The file's contents.
    #[serde(with = "bytes")]
    pub contents: Vec<u8>,
}

impl InputFile {
    /// A file at `path` (relative to the working directory) holding `contents`.
    pub fn new(path: impl Into<String>, contents: impl Into<Vec<u8>>) -> Self {
        InputFile {
            path: path.into(),
            contents: contents.into(),
        }
    }

    /// Checks that the path is relative, non-empty and stays inside the working directory.
    pub fn validate(&self) -> Result<(), Error> {
        check_relative_path("input file path", &self.path)
    }
}

/// Checks that `path` (what the caller calls it: `what`) is relative,
/// names a file, and never leaves the working directory.
///
/// ```
/// use sandbox_core::check_relative_path;
/// assert!(check_relative_path("file", "data/in.csv").is_ok());
/// assert!(check_relative_path("file", "../escape").is_err());
/// ```
pub fn check_relative_path(what: &str, path: &str) -> Result<(), Error> {
    let bad = |why: &str| {
        Error::invalid_request(format!(
            "{what} {path:?} {why}; give a path relative to the working directory, such as \"data/input.txt\""
        ))
    };
    if path.is_empty() || path.contains('\0') {
        return Err(bad("is empty or holds a NUL byte"));
    }
    if path.len() > 4096 {
        return Err(bad("is longer than 4096 bytes"));
    }
    let components = Path::new(path).components();
    if !components
        .clone()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(bad("is absolute or leaves the working directory"));
    }
    if components.clone().all(|c| c == Component::CurDir) {
        return Err(bad("names no file"));
    }
    Ok(())
}

/// One thing to run, with its input and optional per-request limits.
///
/// ```
/// use std::time::Duration;
/// use sandbox_core::{ExecutionRequest, Limits};
///
/// let request = ExecutionRequest::python("import sys; print(sys.stdin.read().upper())")
///     .stdin("hello")
///     .env("GREETING", "hi")
///     .file("data/input.txt", "some bytes")
///     .limits(Limits::builder().timeout(Duration::from_secs(5)));
/// assert!(request.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ExecutionRequest {
    /// The program to run.
    pub program: Program,
    /// Bytes fed to the program's stdin (it sees end-of-file after them).
    #[serde(default, with = "bytes::option")]
    pub stdin: Option<Vec<u8>>,
    /// Environment variables; the host's environment never reaches the program.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Files placed in the working directory before the program starts.
    #[serde(default)]
    pub files: Vec<InputFile>,
    /// Limits overriding the executor's own for this request only.
    #[serde(default)]
    pub limits: LimitsBuilder,
}

impl ExecutionRequest {
    /// A request to run `program`.
    pub fn new(program: Program) -> Self {
        ExecutionRequest {
            program,
            stdin: None,
            env: BTreeMap::new(),
            files: Vec::new(),
            limits: LimitsBuilder::default(),
        }
    }

    /// A request to run Python source.
    pub fn python(source: impl Into<String>) -> Self {
        Self::new(Program::Python(source.into()))
    }

    /// A request to run a shell script.
    pub fn shell(script: impl Into<String>) -> Self {
        Self::new(Program::Shell(script.into()))
    }

    /// A request to run a command with arguments.
    pub fn command<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(Program::Command(argv.into_iter().map(Into::into).collect()))
    }

    /// Feeds `bytes` to the program's stdin.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Sets one environment variable.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    /// Adds a file to the working directory.
    pub fn file(mut self, path: impl Into<String>, contents: impl Into<Vec<u8>>) -> Self {
        self.files.push(InputFile::new(path, contents));
        self
    }

    /// Overrides some of the executor's limits for this request.
    pub fn limits(mut self, limits: LimitsBuilder) -> Self {
        self.limits = limits;
        self
    }

    /// Checks the request's shape (not its limits, which need the executor's base).
    pub fn validate(&self) -> Result<(), Error> {
        match &self.program {
            Program::Command(argv) if argv.is_empty() || argv[0].is_empty() => {
                return Err(Error::invalid_request(
                    "the command is empty; give at least a program name",
                ));
            }
            Program::Command(argv) if argv.iter().any(|arg| arg.contains('\0')) => {
                return Err(Error::invalid_request(
                    "a command argument holds a NUL byte",
                ));
            }
            Program::Python(source) | Program::Shell(source) if source.contains('\0') => {
                return Err(Error::invalid_request(format!(
                    "the {} source holds a NUL byte, which interpreters read as its end; remove it",
                    self.program.kind()
                )));
            }
            _ => {}
        }
        for (name, value) in &self.env {
            if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
                return Err(Error::invalid_request(format!(
                    "environment variable {name:?} is not valid; names are non-empty without '=' and neither part holds a NUL byte"
                )));
            }
        }
        for file in &self.files {
            file.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_paths_must_stay_inside_the_working_directory() {
        for good in ["a.txt", "data/input.csv", "./x", "a/./b"] {
            assert!(InputFile::new(good, "").validate().is_ok(), "{good}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../../x", ".", "a\0b"] {
            let err = InputFile::new(bad, "").validate().unwrap_err();
            assert!(matches!(err, Error::InvalidRequest { .. }), "{bad:?}");
        }
    }

    #[test]
    fn bad_commands_and_env_are_rejected() {
        assert!(
            ExecutionRequest::command(Vec::<String>::new())
                .validate()
                .is_err()
        );
        assert!(
            ExecutionRequest::python("")
                .env("A=B", "x")
                .validate()
                .is_err()
        );
        assert!(
            ExecutionRequest::python("")
                .env("", "x")
                .validate()
                .is_err()
        );
        assert!(
            ExecutionRequest::command(["true"])
                .env("A", "b")
                .validate()
                .is_ok()
        );
        for source in [
            ExecutionRequest::python("print(1)\0print(2)"),
            ExecutionRequest::shell("echo\0"),
        ] {
            assert!(matches!(
                source.validate(),
                Err(Error::InvalidRequest { .. })
            ));
        }
    }

    #[test]
    fn requests_round_trip_through_json() {
        let request = ExecutionRequest::python("print(1)")
            .stdin(vec![0xff, 0x00])
            .file("f.bin", vec![1, 2, 3]);
        let json = serde_json::to_string(&request).unwrap();
        let back: ExecutionRequest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, request);
    }
}
