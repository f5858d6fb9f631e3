//! The process's heap in transparent huge pages, for the reader-state cache.
//!
//! Reader state is many small heap blocks spread over the whole cache (64 MiB by default, GiBs
//! on a large scorer). A batch touches a few dozen of them, each on its own 4 KiB page, and
//! with small pages the CPU's TLB (a few thousand entries, 8 MiB of reach) misses on most of
//! them: a page walk per block on top of the cache miss. With 2 MiB pages the cache is a few
//! dozen TLB entries. The decide bench, 100,000 readers, run back to back (BENCH.md section 2):
//! p50 16.7 → 15.4 µs and p99 23.8 → 21.2 µs for 10-event batches, nothing else changed.
//!
//! glibc's allocator asks the kernel for huge pages (`madvise(MADV_HUGEPAGE)` on its heaps) only
//! when `GLIBC_TUNABLES` holds `glibc.malloc.hugetlb=1` as the process starts, and only the
//! environment sets that. So a process that wants them executes itself again, once, with the
//! variable added, before it starts a thread ([`huge_pages`]): same process id, arguments, open
//! files. It is worth doing only on Linux with glibc, where the kernel gives huge pages on
//! request (`[madvise]` in `/sys/kernel/mm/transparent_hugepage/enabled`): with `always` every
//! heap has them already, with `never` none can. An operator who sets `glibc.malloc.hugetlb`
//! (to anything) keeps their setting.
//!
//! What glibc 2.36 (Debian 12) covers: the main heap, which the first thread allocates from,
//! and blocks large enough for their own mapping. Other threads allocate from arenas of their
//! own, which it leaves in small pages, and the gateway's scorer runs on its runtime's threads:
//! in a loaded gateway 2 MiB of 198 MiB were in huge pages (a 5-minute run of 1,000,000
//! readers, BENCH.md section 2). One arena for all threads (`glibc.malloc.arena_max=1`) put 141
//! MiB in huge pages and took the peak RSS to 174 MiB, but the write-behind's thread then waits
//! for the deciding thread's arena: decide p99 for 10 events 21 → 43 µs in the bench. Not done.

use std::fmt;

/// The tunable that makes glibc's malloc advise huge pages.
const TUNABLE: &str = "glibc.malloc.hugetlb";
/// Where Linux says how it gives transparent huge pages.
const THP_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";

/// Whether the heap is in huge pages, and why (what a process logs once at start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HugePages {
    /// glibc advises huge pages for its heaps (this process was started with the tunable).
    Advised,
    /// The kernel gives every process huge pages (`always`): nothing to do.
    Always,
    /// Small pages, for the reason given.
    Off(String),
}

impl fmt::Display for HugePages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Advised => write!(f, "huge pages ({TUNABLE}=1)"),
            Self::Always => write!(
                f,
                "huge pages (the kernel's transparent huge pages: always)"
            ),
            Self::Off(why) => write!(f, "small pages ({why})"),
        }
    }
}

/// What a process does about its heap.
#[derive(Debug, PartialEq)]
enum Plan {
    /// Nothing: the heap is as it says.
    Stay(HugePages),
    /// Start again with this `GLIBC_TUNABLES`.
    Restart(String),
}

/// What to do, from the kernel's THP mode and the `GLIBC_TUNABLES` the process started with.
fn plan(thp: Option<&str>, tunables: Option<&str>) -> Plan {
    if let Some(t) = tunables.filter(|t| t.contains(TUNABLE)) {
        return Plan::Stay(if t.contains(&format!("{TUNABLE}=1")) {
            HugePages::Advised
        } else {
            HugePages::Off(format!("GLIBC_TUNABLES sets {TUNABLE} itself: {t}"))
        });
    }
    let off = |why: &str| Plan::Stay(HugePages::Off(why.into()));
    match thp {
        None => off("the kernel has no transparent huge pages"),
        Some(mode) if mode.contains("[always]") => Plan::Stay(HugePages::Always),
        Some(mode) if mode.contains("[madvise]") => Plan::Restart(match tunables {
            Some(t) if !t.is_empty() => format!("{t}:{TUNABLE}=1"),
            _ => format!("{TUNABLE}=1"),
        }),
        Some(_) => off("the kernel's transparent huge pages are off"),
    }
}

/// Puts the heap in huge pages where that needs a new start, by executing this program again
/// with `GLIBC_TUNABLES` extended (it then does not return), or says why the heap stays as it
/// is. Call it first thing in `main`, before any thread starts; with `enabled` false it only
/// reports. Not Linux with glibc: always [`HugePages::Off`].
pub fn huge_pages(enabled: bool) -> HugePages {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return HugePages::Off("not Linux with glibc".into());
    }
    let thp = std::fs::read_to_string(THP_ENABLED).ok();
    let tunables = std::env::var("GLIBC_TUNABLES").ok();
    match plan(thp.as_deref(), tunables.as_deref()) {
        Plan::Stay(pages) => pages,
        Plan::Restart(_) if !enabled => HugePages::Off("turned off".into()),
        Plan::Restart(tunables) => reexec(&tunables),
    }
}

#[cfg(unix)]
fn reexec(tunables: &str) -> HugePages {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return HugePages::Off(format!("no path to this program: {e}")),
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    // Returns only when the program could not be executed.
    let e = command.args(args).env("GLIBC_TUNABLES", tunables).exec();
    HugePages::Off(format!("could not start again with {TUNABLE}=1: {e}"))
}

#[cfg(not(unix))]
fn reexec(_: &str) -> HugePages {
    HugePages::Off("not Linux with glibc".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MADVISE: &str = "always [madvise] never\n";

    #[test]
    fn asks_for_the_tunable_only_where_the_kernel_gives_pages_on_request() {
        assert_eq!(
            plan(Some(MADVISE), None),
            Plan::Restart(format!("{TUNABLE}=1"))
        );
        assert_eq!(
            plan(Some(MADVISE), Some("")),
            Plan::Restart(format!("{TUNABLE}=1"))
        );
        // Other tunables are kept.
        assert_eq!(
            plan(Some(MADVISE), Some("glibc.malloc.arena_max=2")),
            Plan::Restart(format!("glibc.malloc.arena_max=2:{TUNABLE}=1"))
        );
        assert_eq!(
            plan(Some("[always] madvise never"), None),
            Plan::Stay(HugePages::Always)
        );
        assert!(matches!(
            plan(Some("always madvise [never]"), None),
            Plan::Stay(HugePages::Off(_))
        ));
        assert!(matches!(plan(None, None), Plan::Stay(HugePages::Off(_))));
    }

    #[test]
    fn a_started_process_does_not_start_again() {
        // Started with the tunable (by itself, or by the operator): no loop, and an operator's
        // other value is kept.
        let set = format!("glibc.malloc.arena_max=2:{TUNABLE}=1");
        assert_eq!(
            plan(Some(MADVISE), Some(&set)),
            Plan::Stay(HugePages::Advised)
        );
        assert!(matches!(
            plan(Some(MADVISE), Some(&format!("{TUNABLE}=0"))),
            Plan::Stay(HugePages::Off(_))
        ));
        assert_eq!(
            plan(None, Some(&format!("{TUNABLE}=1"))),
            Plan::Stay(HugePages::Advised)
        );
    }

    #[test]
    fn says_what_it_did() {
        assert!(HugePages::Advised.to_string().contains(TUNABLE));
        assert!(
            HugePages::Off("turned off".into())
                .to_string()
                .contains("turned off")
        );
    }
}
