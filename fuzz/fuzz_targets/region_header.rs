//! Opening a region whose header is garbage: the opener must return an error (or, for a
//! header the input left valid, open it), never crash, hang or write to the file.
//!
//! The first input byte picks the mode. Raw: the rest of the input is the file's first
//! bytes, the file padded with zeros to a length below 64 KiB the next 4 bytes pick (files
//! shorter and longer than a header; raw bytes never pass the checksum, so a longer file
//! would reach nothing more). Patched: a valid region's file (made once per process),
//! with the input's (offset, byte) pairs written over its header page, so inputs reach past
//! the magic and the checksum to every later check. A ready region's state word and roots
//! are outside the checksum: patches there may leave it openable, and then it must open.
#![no_main]

use cohort::{CreateOptions, OpenOptions, Place, RegionError, SharedCohort};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

cohort::lifetime_classes! {
    enum Life { A, B }
}

/// A file of a freshly created region: its bytes, made once.
fn valid_region() -> &'static Vec<u8> {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let path = scratch("template");
        let _ = std::fs::remove_file(&path);
        // The smallest region (the state's size depends on the build: a checked build's
        // holds the live bits): each input copies it.
        let least = match SharedCohort::<Life>::create(Place::File(&path), CreateOptions::new(1)) {
            Err(RegionError::Capacity {
                minimum: Some(m), ..
            }) => m,
            other => panic!("the least capacity: {other:?}"),
        };
        let region = SharedCohort::<Life>::create(Place::File(&path), CreateOptions::new(least))
            .expect("a region for the template");
        region.leave().expect("written");
        let bytes = std::fs::read(&path).expect("the template");
        std::fs::remove_file(&path).expect("removed");
        bytes
    })
}

/// Writes `bytes` as the file `path`, leaving holes where whole pages are zero (most of a
/// region is): the same contents, written fast. `known` lists the pages that may be
/// non-zero when the caller knows them (the template's, and the header's page).
fn write_sparse(path: &std::path::Path, bytes: &[u8], known: Option<&[usize]>) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::create(path).expect("the input's file");
    file.set_len(bytes.len() as u64).expect("sized");
    let mut write = |i: usize| {
        let page = &bytes[i * 4096..((i + 1) * 4096).min(bytes.len())];
        if page.iter().any(|&b| b != 0) {
            file.write_all_at(page, (i * 4096) as u64).expect("written");
        }
    };
    match known {
        Some(pages) => pages.iter().copied().for_each(&mut write),
        None => (0..bytes.len().div_ceil(4096)).for_each(write),
    }
}

/// The pages of the template that are not all zero (the header's among them).
fn template_pages() -> &'static [usize] {
    static PAGES: OnceLock<Vec<usize>> = OnceLock::new();
    PAGES.get_or_init(|| {
        let bytes = valid_region();
        let mut pages: Vec<usize> = bytes
            .chunks(4096)
            .enumerate()
            .filter(|(_, p)| p.iter().any(|&b| b != 0))
            .map(|(i, _)| i)
            .collect();
        if pages.first() != Some(&0) {
            pages.insert(0, 0);
        }
        pages
    })
}

/// A scratch file of this target, unique to this process.
fn scratch(tag: &str) -> PathBuf {
    cohort_fuzz::scratch_file(&format!("header-{tag}"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let raw = mode & 1 == 0;
    let file = if raw {
        let (len, head) = match rest.split_first_chunk::<4>() {
            Some((len, head)) => (u32::from_le_bytes(*len) as usize % (64 << 10), head),
            None => (rest.len(), rest),
        };
        let mut file = head.to_vec();
        file.resize(len.max(head.len()), 0);
        file
    } else {
        let mut file = valid_region().clone();
        for pair in rest.chunks_exact(3) {
            let at = usize::from(u16::from_le_bytes([pair[0], pair[1]])) % 4096;
            file[at] = pair[2];
        }
        file
    };
    let path = scratch("input");
    write_sparse(&path, &file, (!raw).then(template_pages));
    let opened = SharedCohort::<Life>::open(
        Place::File(&path),
        OpenOptions::new().timeout(Duration::ZERO),
    );
    match opened {
        Ok(region) => {
            // Only a valid header opens: the geometry must be this build's.
            assert!(mode & 1 == 1, "raw garbage opened");
            region.leave().expect("left");
        }
        Err(e) => {
            // Every error names something; none is an OS failure of the opener's own doing.
            assert!(!e.to_string().is_empty());
            if let RegionError::Os { op, error } = &e {
                panic!("{op}: {error}");
            }
            assert_eq!(
                std::fs::read(&path).expect("still there"),
                file,
                "a refused region is left as it was"
            );
        }
    }
    std::fs::remove_file(&path).expect("removed");
});
