//! Landlock: the filesystem (and, from ABI 4, TCP) allowlist a sandboxed
//! process lives under. Built in the parent, enforced by the child.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::sys::{self, ChildLandlock, RulesetAttr};

const EXECUTE: u64 = 1 << 0;
const WRITE_FILE: u64 = 1 << 1;
const READ_FILE: u64 = 1 << 2;
const READ_DIR: u64 = 1 << 3;
const MAKE_CHAR: u64 = 1 << 6;
const MAKE_BLOCK: u64 = 1 << 11;
const TRUNCATE: u64 = 1 << 14;
const IOCTL_DEV: u64 = 1 << 15;
/// Read, list and execute.
const BROWSE: u64 = EXECUTE | READ_FILE | READ_DIR;
/// Rights that apply to a file (not a directory) rule.
const FILE_RIGHTS: u64 = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV;

/// Every filesystem right the kernel's ABI `abi` knows.
fn handled_fs(abi: u32) -> u64 {
    match abi {
        1 => (1 << 13) - 1,
        2 => (1 << 14) - 1,
        3 | 4 => (1 << 15) - 1,
        _ => (1 << 16) - 1,
    }
}

/// How a path may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read, list and execute.
    Browse,
    /// Everything but creating device nodes.
    Modify,
    /// Read and write an existing file (a device such as `/dev/null`).
    Device,
}

/// A ruleset under construction.
#[derive(Debug)]
pub(crate) struct Ruleset {
    fd: OwnedFd,
    handled: u64,
}

impl Ruleset {
    /// A ruleset handling every right of ABI `abi`: whatever is not allowed by
    /// a rule is refused, including all TCP from ABI 4 on when `refuse_tcp`.
    pub fn new(abi: u32, refuse_tcp: bool) -> io::Result<Ruleset> {
        let handled = handled_fs(abi);
        let tcp_refused = refuse_tcp && abi >= 4;
        let attr = RulesetAttr {
            handled_access_fs: handled,
            handled_access_net: if tcp_refused { 0b11 } else { 0 },
            scoped: if abi >= 6 { 0b11 } else { 0 },
        };
        Ok(Ruleset {
            fd: sys::landlock_create_ruleset(&attr)?,
            handled,
        })
    }

    /// Allows `access` beneath `path`; a path that does not exist is skipped.
    pub fn allow(&mut self, path: &Path, access: Access) -> io::Result<()> {
        let file = match File::options()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
            .open(path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let is_dir = file.metadata()?.is_dir();
        let wanted = match access {
            Access::Browse => BROWSE,
            Access::Modify => self.handled & !(MAKE_CHAR | MAKE_BLOCK),
            Access::Device => READ_FILE | WRITE_FILE | TRUNCATE | IOCTL_DEV,
        };
        let mut rights = wanted & self.handled;
        if !is_dir {
            rights &= FILE_RIGHTS;
        }
        sys::landlock_add_path_rule(&self.fd, &OwnedFd::from(file), rights)
    }

    /// The ruleset, ready for the child to enforce.
    pub fn into_child(self) -> ChildLandlock {
        ChildLandlock {
            ruleset: self.fd,
            proc_rights: BROWSE & self.handled,
        }
    }
}
