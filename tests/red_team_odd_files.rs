//! Red-team attacks of session 13 on region files that are not regular region files: a
//! directory, a FIFO, character devices, a symbolic link loop, a sparse file of zeros far
//! larger than any region, a file without permissions. `open` (and `create` over them)
//! must refuse each, in bounded time, without a crash; nothing is left changed. Each case
//! runs in a forked child under an alarm (a hang or a crash fails it). A test that found a
//! defect is `#[ignore]`d with its number (RED-n), its owner and the exact failure.

#[path = "common/processes.rs"]
#[allow(dead_code)]
mod processes;

use cohort::{CreateOptions, OpenOptions, Place, SharedCohort};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

cohort::lifetime_classes! { enum Life { A } }

fn scratch(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("cohort-odd-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    let _ = std::fs::remove_dir(&p);
    p
}

/// In a child: `open` of `p` is refused, and so is `create` (no replace) over it.
fn refused(p: &Path, what: &str) {
    let path = p.to_path_buf();
    let label = what.to_string();
    let pid = processes::in_child(10, move || {
        let o = SharedCohort::<Life>::open(
            Place::File(&path),
            OpenOptions::new().timeout(Duration::ZERO),
        );
        assert!(o.is_err(), "{label}: open succeeded");
        let c = SharedCohort::<Life>::create(Place::File(&path), CreateOptions::new(64 << 20));
        assert!(c.is_err(), "{label}: create succeeded");
    });
    let st = processes::wait_status(pid);
    assert!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "{what}: the child failed (status {st:#x}: {})",
        if libc::WIFSIGNALED(st) {
            "killed by a signal"
        } else {
            "a panic"
        }
    );
}

#[test]
fn a_directory_is_refused() {
    let p = scratch("dir");
    std::fs::create_dir(&p).unwrap();
    refused(&p, "a directory");
    std::fs::remove_dir(&p).unwrap();
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let p = scratch("fifo");
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    refused(&p, "a FIFO");
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn character_devices_are_refused() {
    for dev in ["/dev/null", "/dev/zero", "/dev/full", "/dev/urandom"] {
        refused(Path::new(dev), dev);
    }
}

#[test]
fn a_symbolic_link_loop_is_refused() {
    let p = scratch("loop");
    std::os::unix::fs::symlink(&p, &p).unwrap();
    refused(&p, "a link to itself");
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn a_huge_sparse_file_of_zeros_is_refused() {
    let p = scratch("sparse");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(1 << 40).unwrap();
    drop(f);
    refused(&p, "1 TiB of zeros");
    assert_eq!(
        std::fs::metadata(&p).unwrap().len(),
        1 << 40,
        "the file changed"
    );
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn a_short_file_of_ones_is_refused() {
    for len in [1usize, 63, 4096, 2 << 20] {
        let p = scratch(&format!("ones{len}"));
        std::fs::write(&p, vec![0xffu8; len]).unwrap();
        refused(&p, &format!("{len} bytes of 0xff"));
        assert_eq!(
            std::fs::read(&p).unwrap(),
            vec![0xffu8; len],
            "the file changed"
        );
        std::fs::remove_file(&p).unwrap();
    }
}
