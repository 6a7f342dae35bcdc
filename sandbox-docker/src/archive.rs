//! The code and input files of one execution, as a tar archive built in
//! memory and extracted into the container's `/sandbox` volume before it
//! starts (this works against a remote daemon: no host path is mounted).
//!
//! ```text
//! /sandbox/            working directory (root, 0755)
//!   .rlmkit/           the program (root, 0555); reserved
//!     main.py|main.sh  (root, 0444)
//!   data/in.txt        input files (root, 0444), their directories (root, 0555)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path};

use sandbox_core::{Error, InputFile, Program};

use crate::BACKEND;

/// Where the volume holding code and input files is mounted; the working directory.
pub(crate) const WORK_DIR: &str = "/sandbox";

/// The directory under [`WORK_DIR`] holding the program file; input files may not use it.
pub(crate) const PROGRAM_DIR: &str = ".rlmkit";

const FILE_MODE: u32 = 0o444;
const DIR_MODE: u32 = 0o555;

/// What to put in the container and what to run there.
#[derive(Debug)]
pub(crate) struct Workspace {
    /// The archive to extract into [`WORK_DIR`], or `None` when there is nothing to copy.
    pub tar: Option<Vec<u8>>,
    /// The command line to run.
    pub argv: Vec<String>,
}

/// Where the program and input files go, relative to [`WORK_DIR`]: what
/// both the archive of a cold container and the launcher of a pooled one
/// lay out (root-owned, files 0444, directories 0555).
#[derive(Debug)]
pub(crate) struct Layout<'a> {
    /// The command line to run.
    pub argv: Vec<String>,
    /// The program's file (under [`PROGRAM_DIR`]), if it has one.
    pub program: Option<(String, &'a [u8])>,
    /// The directories of input files, parents before children.
    pub dirs: Vec<String>,
    /// The input files, each path once (the last of duplicates wins).
    pub files: Vec<(String, &'a [u8])>,
}

impl Layout<'_> {
    /// Every directory to create, [`PROGRAM_DIR`] first when there is a program file.
    pub fn all_dirs(&self) -> impl Iterator<Item = &str> {
        self.program
            .as_ref()
            .map(|_| PROGRAM_DIR)
            .into_iter()
            .chain(self.dirs.iter().map(String::as_str))
    }

    /// Every file to write, the program's first.
    pub fn all_files(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.program
            .iter()
            .chain(self.files.iter())
            .map(|(path, contents)| (path.as_str(), *contents))
    }
}

/// Lays out `program` and `files` and archives them.
pub(crate) fn build(program: &Program, files: &[InputFile]) -> Result<Workspace, Error> {
    let layout = layout(program, files)?;
    if layout.program.is_none() && layout.files.is_empty() {
        return Ok(Workspace {
            tar: None,
            argv: layout.argv,
        });
    }
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut tar = TarWriter::new(mtime);
    if let Some((path, source)) = &layout.program {
        tar.dir(PROGRAM_DIR)?;
        tar.file(path, source)?;
    }
    for dir in &layout.dirs {
        tar.dir(dir)?;
    }
    for (path, contents) in &layout.files {
        tar.file(path, contents)?;
    }
    Ok(Workspace {
        tar: Some(tar.finish()?),
        argv: layout.argv,
    })
}

/// Where `program` and `files` go, checked: paths stay inside the working
/// directory, avoid [`PROGRAM_DIR`] and do not clash with each other's directories.
pub(crate) fn layout<'a>(
    program: &'a Program,
    files: &'a [InputFile],
) -> Result<Layout<'a>, Error> {
    let (source, argv) = match program {
        Program::Python(source) => (
            Some(("main.py", source)),
            vec![
                "python3".to_owned(),
                format!("{WORK_DIR}/{PROGRAM_DIR}/main.py"),
            ],
        ),
        Program::Shell(script) => (
            Some(("main.sh", script)),
            vec!["sh".to_owned(), format!("{WORK_DIR}/{PROGRAM_DIR}/main.sh")],
        ),
        Program::Command(argv) => (None, argv.clone()),
        other => {
            return Err(Error::Unsupported {
                backend: BACKEND.to_owned(),
                feature: format!("{} programs", other.kind()),
            });
        }
    };

    // Later files with the same path replace earlier ones, as on a disk.
    let mut entries: BTreeMap<Vec<String>, &[u8]> = BTreeMap::new();
    for file in files {
        file.validate()?;
        let parts = normal_parts(&file.path);
        if parts.first().map(String::as_str) == Some(PROGRAM_DIR) {
            return Err(Error::invalid_request(format!(
                "input file path {:?} lies in {PROGRAM_DIR}/, which holds the program; choose another directory",
                file.path
            )));
        }
        entries.insert(parts, &file.contents);
    }
    let mut dirs: BTreeSet<Vec<String>> = BTreeSet::new();
    for parts in entries.keys() {
        for end in 1..parts.len() {
            dirs.insert(parts[..end].to_vec());
        }
    }
    if let Some(clash) = dirs.iter().find(|dir| entries.contains_key(*dir)) {
        return Err(Error::invalid_request(format!(
            "input file {:?} is also the directory of another input file; give each file its own path",
            clash.join("/")
        )));
    }
    Ok(Layout {
        argv,
        program: source.map(|(name, source)| (format!("{PROGRAM_DIR}/{name}"), source.as_bytes())),
        // A BTreeSet of paths lists every parent before its children.
        dirs: dirs.iter().map(|dir| dir.join("/")).collect(),
        files: entries
            .into_iter()
            .map(|(parts, contents)| (parts.join("/"), contents))
            .collect(),
    })
}

/// The path's normal components (`./a/./b` gives `a`, `b`); the path was validated.
fn normal_parts(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect()
}

/// Root-owned, read-only entries into an in-memory tar.
struct TarWriter {
    builder: tar::Builder<Vec<u8>>,
    mtime: u64,
}

impl TarWriter {
    fn new(mtime: u64) -> Self {
        TarWriter {
            builder: tar::Builder::new(Vec::new()),
            mtime,
        }
    }

    fn header(&self, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(self.mtime);
        header.set_size(size);
        header
    }

    fn dir(&mut self, path: &str) -> Result<(), Error> {
        let mut header = self.header(tar::EntryType::Directory, DIR_MODE, 0);
        self.builder
            .append_data(&mut header, format!("{path}/"), std::io::empty())
            .map_err(|e| archive_error(path, e))
    }

    fn file(&mut self, path: &str, contents: &[u8]) -> Result<(), Error> {
        let mut header = self.header(tar::EntryType::Regular, FILE_MODE, contents.len() as u64);
        self.builder
            .append_data(&mut header, path, contents)
            .map_err(|e| archive_error(path, e))
    }

    fn finish(self) -> Result<Vec<u8>, Error> {
        self.builder
            .into_inner()
            .map_err(|e| Error::io("finishing the archive of code and input files", e))
    }
}

fn archive_error(path: &str, error: std::io::Error) -> Error {
    Error::io(
        format!("adding {path:?} to the archive of code and input files"),
        error,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(tar: &[u8]) -> Vec<(String, u32, u64, Vec<u8>)> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let header = entry.header().clone();
                let mut contents = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut contents).unwrap();
                (
                    entry.path().unwrap().to_string_lossy().into_owned(),
                    header.mode().unwrap(),
                    header.uid().unwrap(),
                    contents,
                )
            })
            .collect()
    }

    #[test]
    fn python_lands_in_the_hidden_program_dir_and_files_are_read_only() {
        let files = [
            InputFile::new("data/in.txt", "x"),
            InputFile::new("./a/./b.bin", vec![1, 2]),
        ];
        let workspace = build(&Program::Python("print(1)".into()), &files).unwrap();
        assert_eq!(workspace.argv, ["python3", "/sandbox/.rlmkit/main.py"]);
        let listed = entries(&workspace.tar.unwrap());
        let names: Vec<&str> = listed.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                ".rlmkit/",
                ".rlmkit/main.py",
                "a/",
                "data/",
                "a/b.bin",
                "data/in.txt"
            ]
        );
        for (name, mode, uid, _) in &listed {
            assert_eq!(*uid, 0, "{name}");
            let expected = if name.ends_with('/') { 0o555 } else { 0o444 };
            assert_eq!(*mode, expected, "{name}");
        }
        assert_eq!(listed[1].3, b"print(1)");
    }

    #[test]
    fn commands_without_files_copy_nothing() {
        let workspace = build(&Program::Command(vec!["ls".into(), "-l".into()]), &[]).unwrap();
        assert!(workspace.tar.is_none());
        assert_eq!(workspace.argv, ["ls", "-l"]);
        let shell = build(&Program::Shell("echo".into()), &[]).unwrap();
        assert_eq!(shell.argv, ["sh", "/sandbox/.rlmkit/main.sh"]);
    }

    #[test]
    fn reserved_and_clashing_paths_are_refused() {
        let reserved = [InputFile::new(".rlmkit/main.py", "x")];
        assert!(matches!(
            build(&Program::Python(String::new()), &reserved),
            Err(Error::InvalidRequest { .. })
        ));
        let clash = [InputFile::new("a", "x"), InputFile::new("a/b", "y")];
        assert!(matches!(
            build(&Program::Python(String::new()), &clash),
            Err(Error::InvalidRequest { .. })
        ));
        let escape = [InputFile::new("../x", "y")];
        assert!(matches!(
            build(&Program::Python(String::new()), &escape),
            Err(Error::InvalidRequest { .. })
        ));
    }

    #[test]
    fn long_paths_and_the_last_duplicate_win() {
        let long = format!("{}/file.txt", "d".repeat(150));
        let files = [
            InputFile::new(long.as_str(), "1"),
            InputFile::new("same", "old"),
            InputFile::new("same", "new"),
        ];
        let workspace = build(&Program::Shell(String::new()), &files).unwrap();
        let listed = entries(&workspace.tar.unwrap());
        assert!(listed.iter().any(|e| e.0 == long));
        let same: Vec<_> = listed.iter().filter(|e| e.0 == "same").collect();
        assert_eq!(same.len(), 1);
        assert_eq!(same[0].3, b"new");
    }
}
