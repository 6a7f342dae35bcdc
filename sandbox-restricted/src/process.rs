//! The process tree of one sandboxed child, and small task helpers shared by
//! one-shot executions and sessions.

use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::cgroup::Cgroup;

/// Every process of one sandboxed child: its process group and, when there
/// is one, its cgroup. Dropping it kills the group (the cgroup's own drop
/// kills its members) unless [`finish`](Self::finish) already cleaned up.
#[derive(Debug)]
pub(crate) struct ProcessTree {
    pid: i32,
    cgroup: Option<Arc<Cgroup>>,
    /// Set once everything was killed and the cgroup removed: the group's
    /// number may then belong to someone else, so it is not signalled again.
    finished: bool,
}

impl ProcessTree {
    /// The tree of child `pid` (leader of its own process group) and its cgroup.
    pub fn new(pid: i32, cgroup: Option<Cgroup>) -> ProcessTree {
        ProcessTree {
            pid,
            cgroup: cgroup.map(Arc::new),
            finished: false,
        }
    }

    /// Kills the process group and every cgroup member.
    pub async fn kill(&self) {
        self.kill_group();
        if let Some(cgroup) = self.cgroup.clone() {
            // Listing and killing members may take a few rounds: keep it off the runtime.
            let _ = tokio::task::spawn_blocking(move || cgroup.kill_all()).await;
        }
    }

    /// Kills the process group and every cgroup member, blocking until the
    /// cgroup is empty (a few seconds at most). For blocking contexts only.
    pub fn kill_blocking(&self) {
        self.kill_group();
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill_all();
        }
    }

    /// Sends SIGKILL to the process group.
    pub fn kill_group(&self) {
        if !self.finished {
            // The group may be gone already: nothing to do then.
            let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }

    /// Whether the kernel's OOM killer struck in the cgroup.
    pub fn oom_killed(&self) -> bool {
        self.cgroup
            .as_ref()
            .is_some_and(|cgroup| cgroup.oom_killed())
    }

    /// Removes the cgroup, returning whether the OOM killer struck and the peak memory.
    pub async fn finish(mut self) -> (bool, Option<u64>) {
        self.finished = true;
        let Some(cgroup) = self.cgroup.take() else {
            return (false, None);
        };
        let facts = (cgroup.oom_killed(), cgroup.peak_memory());
        let _ = tokio::task::spawn_blocking(move || remove(cgroup)).await;
        facts
    }

    /// Removes the cgroup now, blocking. For blocking contexts only, after
    /// [`kill_blocking`](Self::kill_blocking) and reaping the child.
    pub fn finish_blocking(mut self) {
        self.finished = true;
        if let Some(cgroup) = self.cgroup.take() {
            remove(cgroup);
        }
    }
}

/// Removes `cgroup` here when this is its last handle; otherwise the last
/// handle's drop removes it.
fn remove(cgroup: Arc<Cgroup>) {
    if let Ok(cgroup) = Arc::try_unwrap(cgroup) {
        cgroup.remove();
    }
}

impl Drop for ProcessTree {
    fn drop(&mut self) {
        // Reached with a live tree only when the caller dropped the future or an
        // error cut the run short; the cgroup's own drop kills its members.
        self.kill_group();
    }
}

/// A task aborted when its handle is dropped, so a cancelled run stops its helpers.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    /// Waits for the task to end.
    pub async fn join(mut self) {
        let _ = (&mut self.0).await;
    }

    /// Stops the task now.
    pub fn abort(&self) {
        self.0.abort();
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A job for the spawner thread.
type Job = Box<dyn FnOnce() + Send>;

/// Runs `job` on one thread that lives as long as the process, and returns its result.
///
/// The kernel sends a child's parent-death signal (which the sandbox sets, so
/// that children die with their caller) when the *thread* that forked it
/// ends, not the process. A session's process must outlive whichever thread
/// happened to open it (a blocking-pool thread, a short-lived runtime), so
/// sessions are forked from here. Falls back to the calling thread if the
/// spawner cannot be had.
pub(crate) async fn on_spawner_thread<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> T {
    static SPAWNER: OnceLock<Option<Mutex<Sender<Job>>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (sender, receiver) = channel::<Job>();
        std::thread::Builder::new()
            .name("rlmkit-spawner".to_owned())
            .spawn(move || {
                for job in receiver {
                    job();
                }
            })
            .ok()
            .map(|_| Mutex::new(sender))
    });
    let (reply, answer) = tokio::sync::oneshot::channel();
    let mut job: Option<Job> = Some(Box::new(move || {
        // The caller may have given up: then the result is dropped here.
        let _ = reply.send(job());
    }));
    if let Some(sender) = spawner {
        let sender = sender
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(boxed) = job.take() {
            if let Err(returned) = sender.send(boxed) {
                job = Some(returned.0);
            }
        }
    }
    if let Some(job) = job {
        job();
    }
    match answer.await {
        Ok(value) => value,
        // The job always replies before it is dropped, unless it panicked.
        Err(_) => std::panic::resume_unwind(Box::new("the spawner's job panicked")),
    }
}
