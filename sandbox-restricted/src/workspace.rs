//! The per-execution temporary directory: the program's working directory,
//! its scratch directory, and the program file itself. For a root caller it
//! is a size-capped tmpfs of its own, so the program cannot fill the host's
//! disk. Unmounted and removed on drop.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sandbox_core::{Error, InputFile};

/// Working directories are named `rlmkit-sandbox-<owner pid>-XXXXXX`.
const PREFIX: &str = "rlmkit-sandbox-";

/// Removes the working directories in `parent` whose owner process is gone
/// (left by a caller that was killed outright), returning how many.
pub(crate) fn sweep(parent: &Path) -> usize {
    let Ok(entries) = fs::read_dir(parent) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if owner == std::process::id() || Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        let path = entry.path();
        // A tmpfs of its own goes first (nothing to unmount is fine too).
        let _ = unmount(&path);
        // Read-only program directories must become writable to be removed.
        for dir in walk(&path)
            .unwrap_or_default()
            .into_iter()
            .chain([path.clone()])
        {
            if dir.is_dir() && !dir.is_symlink() {
                let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
            }
        }
        if fs::remove_dir_all(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// A fresh directory tree for one execution.
///
/// ```text
/// rlmkit-sandbox-XXXXXX/
///   work/      working directory and HOME; input files land here
///   tmp/       TMPDIR
///   program/   the code to run, read-only
/// ```
#[derive(Debug)]
pub(crate) struct Workspace {
    path: PathBuf,
    /// `None` once removed.
    root: Option<tempfile::TempDir>,
    /// Whether `path` is a tmpfs of its own, to unmount before removal.
    mounted: bool,
}

/// Mounts a tmpfs of `bytes` (rounded up to pages) on `path`, for root only.
fn mount_tmpfs(path: &Path, bytes: u64) -> nix::Result<()> {
    use nix::mount::{MsFlags, mount};
    let options = format!("size={bytes},mode=0700");
    mount(
        Some("tmpfs"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
}

/// Unmounts the tmpfs on `path`, detached: a process still holding a file
/// in it cannot keep it busy.
fn unmount(path: &Path) -> nix::Result<()> {
    nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH)
}

/// A new, empty directory in `parent` named for this process, so that the
/// sweep of dead owners' directories can tell whose it is.
fn new_root(parent: &Path) -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{}-", std::process::id()))
        .tempdir_in(parent)
}

/// Whether a working directory in `parent` can be a tmpfs of its own: mounts
/// and unmounts one on a directory made for the purpose.
pub(crate) fn probe_own_tmpfs(parent: &Path) -> Result<(), String> {
    let dir = new_root(parent)
        .map_err(|e| format!("cannot create a directory in {} ({e})", parent.display()))?;
    mount_tmpfs(dir.path(), 64 * 1024)
        .map_err(|e| format!("the kernel refused a tmpfs mount ({e})"))?;
    unmount(dir.path()).map_err(|e| format!("a probe tmpfs could not be unmounted ({e})"))
}

impl Workspace {
    /// Creates the tree under `parent` and writes `files` into `work/`; with
    /// `own_tmpfs`, on a tmpfs of that many bytes mounted on it first.
    pub fn create(
        parent: &Path,
        files: &[InputFile],
        own_tmpfs: Option<u64>,
    ) -> Result<Workspace, Error> {
        let root = new_root(parent).map_err(|e| {
                Error::io(
                    format!(
                        "creating a working directory in {} (check that it exists and is writable, or choose another with RestrictedExecutorBuilder::temp_dir)",
                        parent.display()
                    ),
                    e,
                )
            })?;
        let mut workspace = Workspace {
            path: root.path().to_path_buf(),
            root: Some(root),
            mounted: false,
        };
        if let Some(bytes) = own_tmpfs {
            mount_tmpfs(&workspace.path, bytes).map_err(|e| {
                Error::io(
                    format!(
                        "mounting a tmpfs of its own on {}",
                        workspace.path.display()
                    ),
                    std::io::Error::from(e),
                )
            })?;
            workspace.mounted = true;
        }
        for dir in [
            workspace.work_dir(),
            workspace.tmp_dir(),
            workspace.program_dir(),
        ] {
            fs::create_dir(&dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        for file in files {
            file.validate()?;
            let path = workspace.work_dir().join(&file.path);
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)
                    .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            }
            fs::write(&path, &file.contents)
                .map_err(|e| Error::io(format!("writing input file {:?}", file.path), e))?;
        }
        Ok(workspace)
    }

    /// Writes the program's source as a read-only file and returns its path.
    pub fn write_program(&self, name: &str, source: &str) -> Result<PathBuf, Error> {
        let path = self.program_dir().join(name);
        let write = || -> std::io::Result<()> {
            let mut file = fs::File::create(&path)?;
            file.write_all(source.as_bytes())?;
            file.set_permissions(fs::Permissions::from_mode(0o444))?;
            fs::set_permissions(self.program_dir(), fs::Permissions::from_mode(0o555))
        };
        write().map_err(|e| Error::io(format!("writing the program to {}", path.display()), e))?;
        Ok(path)
    }

    /// Hands the writable directories to `uid`:`gid` and lets it reach them
    /// (the program directory stays root's and read-only).
    pub fn grant(&self, uid: u32, gid: u32) -> Result<(), Error> {
        let grant = || -> std::io::Result<()> {
            fs::set_permissions(&self.path, fs::Permissions::from_mode(0o711))?;
            for dir in [self.work_dir(), self.tmp_dir()] {
                std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
                for entry in walk(&dir)? {
                    std::os::unix::fs::lchown(&entry, Some(uid), Some(gid))?;
                }
            }
            Ok(())
        };
        grant().map_err(|e| Error::io("handing the working directory to the sandbox user", e))
    }

    /// The working directory (also HOME).
    pub fn work_dir(&self) -> PathBuf {
        self.path.join("work")
    }

    /// The Python program's directory, read-only.
    pub fn program_path(&self) -> PathBuf {
        self.program_dir()
    }

    /// The scratch directory (TMPDIR).
    pub fn tmp_dir(&self) -> PathBuf {
        self.path.join("tmp")
    }

    fn program_dir(&self) -> PathBuf {
        self.path.join("program")
    }

    /// Removes the tree now, reporting failure; dropping also removes it, silently.
    pub fn remove(mut self) -> Result<(), Error> {
        let Some(root) = self.take_root() else {
            return Ok(());
        };
        root.close()
            .map_err(|e| Error::io(format!("removing {}", self.path.display()), e))
    }

    /// The tree's handle, its tmpfs unmounted and the program directory made
    /// writable again so that its file can go even for a caller that is not root.
    fn take_root(&mut self) -> Option<tempfile::TempDir> {
        let root = self.root.take()?;
        if std::mem::take(&mut self.mounted) {
            let _ = unmount(&self.path);
        }
        let _ = fs::set_permissions(self.program_dir(), fs::Permissions::from_mode(0o755));
        Some(root)
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        // The handle's own drop removes the tree, silently.
        drop(self.take_root());
    }
}

/// Every path below `dir` (not following symlinks).
fn walk(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                pending.push(entry.path());
            }
            found.push(entry.path());
        }
    }
    Ok(found)
}
