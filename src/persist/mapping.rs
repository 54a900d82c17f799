//! A region's memory in this process: created (the name taken exclusively, sized, mapped,
//! its header written) or opened (mapped once its creator has marked it ready), before an
//! allocator instance is built on it.
//!
//! **Who formats.** Creating takes the name with `O_EXCL`: of processes racing to create one
//! name, exactly one succeeds; the others get [`RegionError::AlreadyExists`]. The creator
//! sizes the object (it reads zero), writes the header with `STATE = INITIALISING` (the
//! state word last), builds the instance's state, then stores `STATE = READY` (Release).
//!
//! **Who waits.** An opener that finds the name polls, with a bounded wait, until it reads
//! `READY` (Acquire: it then sees every byte the creator wrote before), through a
//! read-only mapping of the header page: while the object is still empty (created, not yet
//! sized) or its header unwritten, and while `STATE = INITIALISING` and the creator
//! (pid, start time) still runs. A header that is written but wrong is an error at once,
//! as is a creator that died. Nothing an opener does writes to the region before it is
//! accepted.

use super::attach::Attachment;
use super::error::RegionError;
use super::CreateOptions;
use super::header::{self, Expected, Header, Layout, HEADER_BYTES, INITIALISING, NEVER_WRITTEN, READY};
use crate::class::BLOCK_SIZE;
use crate::os::shared_mem::{self, CName, Fd, Kind};
use std::io;
use std::time::{Duration, Instant};

/// A region's name, checked and ready for the OS.
pub(crate) struct Name {
    pub(crate) kind: Kind,
    pub(crate) c: Box<CName>,
    /// The name as given, for errors.
    pub(crate) shown: String,
}

impl Name {
    /// Checks `bytes` as a name of `kind`: a shared-memory name is `/` and 1 to 254 bytes
    /// with no other `/` (what POSIX promises to work everywhere), but not `/.` or `/..`
    /// (the shared-memory directory and its parent); a path is anything
    /// without NUL, 1 to 4095 bytes.
    pub(crate) fn new(kind: Kind, bytes: &[u8]) -> Result<Name, RegionError> {
        let shown = String::from_utf8_lossy(bytes).into_owned();
        let invalid = |reason| RegionError::InvalidName {
            name: shown.clone(),
            reason,
        };
        if kind == Kind::SharedMemory {
            match bytes {
                [b'/', rest @ ..]
                    if !rest.is_empty() && !rest.contains(&b'/') && rest != b"." && rest != b".." => {}
                _ => return Err(invalid("a shared-memory name is `/` followed by 1 to 254 bytes, none of them `/`, other than `.` and `..`")),
            }
            if bytes.len() > 255 {
                return Err(invalid("a shared-memory name is at most 255 bytes"));
            }
        }
        let c = CName::new(bytes)
            .ok_or_else(|| invalid("a name is 1 to 4095 bytes, none of them NUL"))?;
        Ok(Name {
            kind,
            c: Box::new(c),
            shown,
        })
    }

    pub(crate) fn os(&self, op: &'static str, e: io::Error) -> RegionError {
        match e.kind() {
            io::ErrorKind::NotFound => RegionError::NotFound {
                name: self.shown.clone(),
            },
            io::ErrorKind::AlreadyExists => RegionError::AlreadyExists {
                name: self.shown.clone(),
            },
            _ => RegionError::os(op, e),
        }
    }

    /// Deletes the name.
    pub(crate) fn unlink(&self) -> Result<(), RegionError> {
        shared_mem::unlink(self.kind, &self.c).map_err(|e| self.os("unlink", e))
    }
}

/// A region mapped in this process, with its layout. Unmapped when dropped, unless handed
/// to an instance ([`Mapping::into_raw`]).
pub(crate) struct Mapping {
    pub(crate) base: *mut u8,
    pub(crate) layout: Layout,
    /// This process's slot in the region's attach table (freed after the unmap).
    attachment: Option<Attachment>,
}

impl Mapping {
    /// The header at the region's base.
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: the mapping holds at least HEADER_BYTES (the layout puts the state after
        // them) at a block-aligned base, for as long as `self`.
        unsafe { Header::at(self.base) }
    }

    /// Creates the region `name` of `capacity` bytes (rounded up to whole blocks), deleting
    /// an existing one first when `replace`. Returns it mapped with its header written and
    /// `STATE = INITIALISING`; the caller formats the instance's state, then publishes
    /// [`Header::publish_ready`] (or deletes the name if that fails).
    pub(crate) fn create(
        name: &Name,
        options: &CreateOptions,
        expect: &Expected,
    ) -> Result<Mapping, RegionError> {
        let CreateOptions {
            capacity,
            replace,
            preallocate,
            region,
        } = *options;
        let layout = match region {
            Some(_) => Layout::of_blocks(capacity, expect)?,
            None => Layout::new(capacity, expect)?,
        };
        if replace {
            match name.unlink() {
                Ok(()) | Err(RegionError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let fd = shared_mem::create_exclusive(name.kind, &name.c).map_err(|e| name.os("create", e))?;
        let mapped = fd
            .set_len(layout.capacity as u64)
            .map_err(|e| RegionError::os("set the region's length", e))
            .and_then(|()| match preallocate {
                true => fd
                    .allocate(layout.capacity as u64)
                    .map_err(|e| RegionError::os("allocate the region's storage", e)),
                false => Ok(()),
            })
            .and_then(|()| {
                shared_mem::map_shared(&fd, layout.capacity, BLOCK_SIZE)
                    .map_err(|e| RegionError::os("map the region", e))
            });
        let base = match mapped {
            Ok(base) => base,
            Err(e) => {
                // Nobody can have used it: the header was never written.
                let _ = name.unlink();
                return Err(e);
            }
        };
        let mut m = Mapping {
            base,
            layout,
            attachment: None,
        };
        let pid = shared_mem::pid();
        m.header().write(&header::format_words(
            &layout,
            expect,
            pid,
            shared_mem::process_word(),
        ));
        // SAFETY: the whole region is mapped while `m` lives.
        let admitted = unsafe {
            Attachment::admit(m.base, &m.layout, &fd, name.kind == Kind::File, None)
        };
        match admitted {
            Ok(a) => m.attachment = Some(a),
            Err(e) => {
                drop(m);
                let _ = name.unlink();
                return Err(e);
            }
        }
        Ok(m)
    }

    /// Opens the region `name`, waiting at most `timeout` for its creator to make it ready,
    /// and checks its header against `expect`.
    pub(crate) fn open(name: &Name, expect: &Expected, timeout: Duration) -> Result<Mapping, RegionError> {
        let fd = shared_mem::open_existing(name.kind, &name.c).map_err(|e| name.os("open", e))?;
        let started = Instant::now();
        let mut pause = Duration::from_micros(100);
        let mut probe: Option<Probe> = None;
        loop {
            let len = fd.len().map_err(|e| RegionError::os("read the region's length", e))?;
            let waited = started.elapsed();
            let mut creator = (0, 0);
            if len != 0 {
                if len < HEADER_BYTES as u64 {
                    return Err(RegionError::Truncated {
                        expected: HEADER_BYTES as u64,
                        found: len,
                    });
                }
                if probe.is_none() {
                    probe = Some(Probe::map(&fd)?);
                }
                let h = probe.as_ref().map(Probe::header).expect("mapped above");
                let state = h.state();
                let words = h.snapshot();
                if state != NEVER_WRITTEN || words[header::W_MAGIC] != 0 {
                    // Written (or garbage): its geometry is final once STATE is non-zero.
                    if state == NEVER_WRITTEN {
                        // The magic without the state is a creator between its stores;
                        // another non-zero first word is not a region.
                        if words[header::W_MAGIC] != header::MAGIC {
                            return Err(RegionError::BadMagic {
                                found: words[header::W_MAGIC].to_le_bytes(),
                            });
                        }
                    } else {
                        let layout = header::validate(&words, len, expect)?;
                        match state {
                            READY => {
                                let patience = timeout.saturating_sub(waited);
                                return Mapping::map_ready(&fd, layout, name.kind == Kind::File, patience);
                            }
                            INITIALISING => {}
                            other => {
                                return Err(RegionError::Geometry {
                                    field: "state word",
                                    expected: READY,
                                    found: other,
                                })
                            }
                        }
                        creator = h.creator();
                        if !alive(creator) {
                            return Err(RegionError::NotReady {
                                waited,
                                creator_pid: creator.0,
                                creator_alive: false,
                            });
                        }
                    }
                }
            }
            if waited >= timeout {
                return Err(RegionError::NotReady {
                    waited,
                    creator_pid: creator.0,
                    creator_alive: creator.0 != 0 && alive(creator),
                });
            }
            std::thread::sleep(pause.min(timeout - waited));
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }

    /// Maps a ready region whole and admits this process to it ([`Attachment::admit`]).
    /// waiting at most `patience` for another process's attach or leave.
    fn map_ready(fd: &Fd, layout: Layout, file: bool, patience: Duration) -> Result<Mapping, RegionError> {
        let base = shared_mem::map_shared(fd, layout.capacity, BLOCK_SIZE)
            .map_err(|e| RegionError::os("map the region", e))?;
        let mut m = Mapping {
            base,
            layout,
            attachment: None,
        };
        // SAFETY: the whole region is mapped while `m` lives.
        m.attachment = Some(unsafe { Attachment::admit(base, &layout, fd, file, Some(patience)) }?);
        Ok(m)
    }

    /// Gives up the mapping without unmapping it: whoever takes `(base, capacity)` unmaps,
    /// then drops the attachment.
    pub(crate) fn into_raw(self) -> (*mut u8, Layout, Option<Attachment>) {
        let mut me = core::mem::ManuallyDrop::new(self);
        (me.base, me.layout, me.attachment.take())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours, made by map_shared, and nothing holds into it (an
        // instance built on it takes it with into_raw instead).
        unsafe { shared_mem::unmap_shared(self.base, self.layout.capacity) };
    }
}

/// True unless the creator `(pid, process word)` is known to be dead (see
/// `shared_mem::is_alive`: a zombie is dead; what cannot be decided, such as a creator in
/// another pid namespace or this process out of file descriptors, is alive). A word of 0
/// (a header written without one) leaves the pid alone to decide.
pub(super) fn alive((pid, word): (u64, u64)) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    match word {
        0 => shared_mem::pid_exists(pid),
        word => shared_mem::is_alive(word),
    }
}

/// A read-only mapping of a region's header page.
struct Probe(*const u8);

impl Probe {
    fn map(fd: &Fd) -> Result<Probe, RegionError> {
        shared_mem::map_read_only(fd, HEADER_BYTES)
            .map(Probe)
            .map_err(|e| RegionError::os("map the region's header", e))
    }

    fn header(&self) -> &Header {
        // SAFETY: the probe maps HEADER_BYTES readable bytes, page aligned, while it lives;
        // the header is only read through it.
        unsafe { Header::at(self.0) }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        // SAFETY: the header page is ours and read only through `self`.
        unsafe { shared_mem::unmap_shared(self.0, HEADER_BYTES) };
    }
}

#[cfg(test)]
mod tests {
    use super::super::header::tests::expected;
    use super::*;

    fn shm(tag: &str) -> Name {
        let n = Name::new(
            Kind::SharedMemory,
            format!("/cohort-mapping-{tag}-{}", shared_mem::pid()).as_bytes(),
        )
        .unwrap();
        let _ = n.unlink();
        n
    }

    #[test]
    fn names_are_checked_before_anything_is_made() {
        for bad in ["", "noslash", "/", "/a/b", "/a\0b", "/.", "/.."] {
            let e = Name::new(Kind::SharedMemory, bad.as_bytes()).err().unwrap();
            assert!(matches!(e, RegionError::InvalidName { .. }), "{bad:?}: {e}");
        }
        assert!(Name::new(Kind::SharedMemory, "/x".repeat(200).as_bytes()).is_err());
        assert!(Name::new(Kind::File, b"").is_err());
        assert!(Name::new(Kind::File, b"a/b/c").is_ok());
    }

    #[test]
    fn create_open_and_the_errors_of_a_taken_or_missing_name() {
        let n = shm("basic");
        let e = expected(2);
        assert!(matches!(
            Mapping::open(&n, &e, Duration::ZERO),
            Err(RegionError::NotFound { .. })
        ));
        let made = Mapping::create(&n, &CreateOptions::new(8 << 20), &e).unwrap();
        assert_eq!(made.base as usize % BLOCK_SIZE, 0);
        assert!(matches!(
            Mapping::create(&n, &CreateOptions::new(8 << 20), &e),
            Err(RegionError::AlreadyExists { .. })
        ));
        made.header().root(3).store(4096, core::sync::atomic::Ordering::Relaxed);
        made.header().publish_ready();
        let opened = Mapping::open(&n, &e, Duration::ZERO).unwrap();
        assert_ne!(opened.base, made.base, "a second mapping, at another address");
        assert_eq!(opened.layout, made.layout);
        assert_eq!(
            opened.header().root(3).load(core::sync::atomic::Ordering::Relaxed),
            4096
        );
        // Another lifetime-class count is refused, and the region is left as it was.
        let before = opened.header().snapshot();
        assert!(matches!(
            Mapping::open(&n, &expected(3), Duration::ZERO),
            Err(RegionError::LifetimeClasses { expected: 3, found: 2 })
        ));
        assert_eq!(opened.header().snapshot(), before);
        // Replacing makes a new, unformatted region.
        drop((made, opened));
        let again = Mapping::create(&n, &CreateOptions::new(8 << 20).replace(true), &e).unwrap();
        assert_eq!(again.header().state(), INITIALISING);
        assert_eq!(again.header().root(3).load(core::sync::atomic::Ordering::Relaxed), 0);
        n.unlink().unwrap();
        assert!(matches!(n.unlink(), Err(RegionError::NotFound { .. })));
    }

    #[test]
    fn a_preallocated_region_holds_its_storage_from_the_start() {
        let n = shm("prealloc");
        let e = expected(1);
        let sparse = Mapping::create(&n, &CreateOptions::new(8 << 20), &e).unwrap();
        let fd = shared_mem::open_existing(n.kind, &n.c).unwrap();
        assert!(fd.allocated().unwrap() < 1 << 20, "sparse: the header's pages only");
        drop((sparse, fd));
        let options = CreateOptions::new(8 << 20).replace(true).preallocate(true);
        let full = Mapping::create(&n, &options, &e).unwrap();
        let fd = shared_mem::open_existing(n.kind, &n.c).unwrap();
        assert!(fd.allocated().unwrap() >= full.layout.capacity as u64);
        drop(full);
        n.unlink().unwrap();
    }

    #[test]
    fn an_opener_waits_for_the_creator_and_times_out_when_it_never_finishes() {
        let n = shm("wait");
        let e = expected(1);
        let made = Mapping::create(&n, &CreateOptions::new(8 << 20), &e).unwrap();
        let t0 = Instant::now();
        match Mapping::open(&n, &e, Duration::from_millis(50)) {
            Err(RegionError::NotReady {
                creator_pid,
                creator_alive: true,
                waited,
            }) => {
                assert_eq!(creator_pid, shared_mem::pid() as u64);
                assert!(waited >= Duration::from_millis(50));
            }
            other => panic!("{:?}", other.err()),
        }
        assert!(t0.elapsed() >= Duration::from_millis(50));
        let base = made.base as usize;
        let publisher = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            // SAFETY: `made` is mapped until the thread is joined.
            unsafe { Header::at(base as *const u8) }.publish_ready();
        });
        let opened = Mapping::open(&n, &e, Duration::from_secs(30)).unwrap();
        assert_eq!(opened.header().state(), READY);
        publisher.join().unwrap();
        drop(made);
        n.unlink().unwrap();
    }

    #[test]
    fn an_opener_waits_for_an_empty_object_then_gives_up_naming_no_creator() {
        let n = shm("empty");
        let _fd = shared_mem::create_exclusive(n.kind, &n.c).unwrap();
        match Mapping::open(&n, &expected(1), Duration::from_millis(20)) {
            Err(RegionError::NotReady { creator_pid: 0, .. }) => {}
            other => panic!("{:?}", other.err()),
        }
        n.unlink().unwrap();
    }

    #[test]
    fn a_creator_that_died_while_formatting_is_reported_at_once() {
        let n = shm("died");
        let e = expected(1);
        // SAFETY: the child only creates the region (no lock of the parent's is needed:
        // the test's threads do not hold the allocator's) and exits without unwinding.
        let child = unsafe { libc::fork() };
        assert!(child >= 0);
        if child == 0 {
            let code = match Mapping::create(&n, &CreateOptions::new(8 << 20), &e) {
                Ok(m) => {
                    core::mem::forget(m);
                    0
                }
                Err(_) => 1,
            };
            // SAFETY: ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        assert_eq!(status, 0);
        let t0 = Instant::now();
        match Mapping::open(&n, &e, Duration::from_secs(30)) {
            Err(RegionError::NotReady {
                creator_pid,
                creator_alive: false,
                ..
            }) => assert_eq!(creator_pid, child as u64),
            other => panic!("{:?}", other.err()),
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "not the whole timeout");
        n.unlink().unwrap();
    }

    #[test]
    fn a_creator_is_alive_by_its_process_word_or_by_pid_alone_when_it_had_none() {
        let me = shared_mem::pid();
        let word = shared_mem::process_word();
        assert!(alive((me as u64, word)));
        assert!(!alive((me as u64, word + 1)), "a reused pid");
        assert!(alive((me as u64, 0)));
        assert!(!alive((i32::MAX as u64, 0)));
        assert!(!alive((u64::MAX, 0)));
    }

    #[test]
    fn garbage_and_short_objects_are_refused_at_once() {
        let n = shm("garbage");
        let fd = shared_mem::create_exclusive(n.kind, &n.c).unwrap();
        fd.set_len(100).unwrap();
        assert!(matches!(
            Mapping::open(&n, &expected(1), Duration::from_secs(30)),
            Err(RegionError::Truncated { expected: 4096, found: 100 })
        ));
        fd.set_len(8 << 20).unwrap();
        let p = shared_mem::map_shared(&fd, 4096, 4096).unwrap();
        // SAFETY: p maps 4096 bytes of the object.
        unsafe { core::ptr::write_bytes(p, 0xa5, 4096) };
        let t0 = Instant::now();
        assert!(matches!(
            Mapping::open(&n, &expected(1), Duration::from_secs(30)),
            Err(RegionError::BadMagic { found }) if found == [0xa5; 8]
        ));
        assert!(t0.elapsed() < Duration::from_secs(10));
        // SAFETY: the page was mapped above and is no longer used.
        unsafe {
            assert_eq!(p.add(4095).read(), 0xa5, "left as it was");
            shared_mem::unmap_shared(p, 4096);
        }
        n.unlink().unwrap();
    }
}
