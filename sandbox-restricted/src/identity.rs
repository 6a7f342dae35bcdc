//! Unprivileged identities for the children of a root caller: one uid (and
//! the gid of the same number) per running execution, from a range no
//! account on the host uses, so concurrent executions never share a uid or
//! its process count.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use crate::sys::Identity;

/// The default first uid of the range.
pub const DEFAULT_FIRST_UID: u32 = 1_500_000_000;
/// The default number of uids in the range.
pub const DEFAULT_UID_COUNT: u32 = 65_536;

/// The uids leased by every pool of this process: two executors sharing a
/// range never hand out the same uid at once.
static IN_USE: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// A range of uids handed out one per execution.
#[derive(Debug)]
pub(crate) struct UidPool {
    first: u32,
    count: u32,
}

impl UidPool {
    /// A pool over `first..first + count`, refused when an account or group
    /// of the host already uses a uid or gid in it.
    pub fn new(first: u32, count: u32) -> Result<Arc<UidPool>, String> {
        let last = first
            .checked_add(count)
            .filter(|&end| count > 0 && first > 0 && end < u32::MAX)
            .ok_or_else(|| format!("the uid range {first}+{count} is empty or out of range"))?;
        for (file, what) in [("/etc/passwd", "account"), ("/etc/group", "group")] {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            for line in text.lines() {
                let mut fields = line.split(':');
                let name = fields.next().unwrap_or_default();
                if let Some(id) = fields.nth(1).and_then(|id| id.parse::<u32>().ok()) {
                    if (first..last).contains(&id) {
                        return Err(format!(
                            "the {what} {name:?} in {file} uses id {id}, inside the sandbox range {first}..{last}; choose another range"
                        ));
                    }
                }
            }
        }
        Ok(Arc::new(UidPool { first, count }))
    }

    /// A free identity, released when the lease is dropped; spread by process
    /// id so that several processes sharing the range rarely meet.
    pub fn lease(&self) -> Option<Lease> {
        let mut in_use = IN_USE.lock().ok()?;
        let start = std::process::id().wrapping_mul(2_654_435_761) % self.count;
        let uid = (0..self.count)
            .map(|i| self.first + (start + i) % self.count)
            .find(|uid| !in_use.contains(uid))?;
        in_use.insert(uid);
        Some(Lease { uid })
    }

    /// The range, for reports.
    pub fn describe(&self) -> String {
        format!("{}..{}", self.first, self.first + self.count)
    }

    /// The range as (first, end).
    pub fn bounds(&self) -> (u32, u32) {
        (self.first, self.first + self.count)
    }
}

/// One identity in use by one execution.
#[derive(Debug)]
pub(crate) struct Lease {
    uid: u32,
}

impl Lease {
    /// The uid and gid.
    pub fn identity(&self) -> Identity {
        Identity {
            uid: self.uid,
            gid: self.uid,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Ok(mut in_use) = IN_USE.lock() {
            in_use.remove(&self.uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_pools_over_one_range_never_share_a_uid() {
        let first = DEFAULT_FIRST_UID + 1000;
        let a = UidPool::new(first, 2).unwrap();
        let b = UidPool::new(first, 2).unwrap();
        let x = a.lease().unwrap();
        let y = b.lease().unwrap();
        assert_ne!(x.identity().uid, y.identity().uid);
        assert!(a.lease().is_none() && b.lease().is_none());
    }

    #[test]
    fn leases_are_distinct_and_released() {
        let pool = UidPool::new(DEFAULT_FIRST_UID + 2000, 3).unwrap();
        let a = pool.lease().unwrap();
        let b = pool.lease().unwrap();
        let c = pool.lease().unwrap();
        assert!(pool.lease().is_none());
        let ids: BTreeSet<u32> = [&a, &b, &c].iter().map(|l| l.identity().uid).collect();
        assert_eq!(ids.len(), 3);
        drop(b);
        assert!(pool.lease().is_some());
    }

    #[test]
    fn ranges_used_by_accounts_are_refused() {
        assert!(UidPool::new(0, 10).is_err());
        assert!(
            UidPool::new(1, 65_536).is_err(),
            "root's group 0 or a system account is inside"
        );
        assert!(UidPool::new(u32::MAX - 1, 10).is_err());
    }
}
