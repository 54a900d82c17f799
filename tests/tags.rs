//! Labels (the "tags"): an allocator's label appears in its misuse messages, its
//! verify errors and its statistics, so that a program with several allocators knows which
//! one complained; a shared region's label is kept in the region.

use cohort::{Cohort, CreateOptions, Label, Place, SharedCohort, LABEL_BYTES};
use std::sync::Barrier;

cohort::lifetime_classes! {
    enum Life { A, B }
}

static PARSER: Cohort<Life> = Cohort::new().labelled("parser");

#[test]
fn a_misuse_message_names_the_allocator_that_complained() {
    let other: Cohort<Life> = Cohort::new().labelled("renderer");
    let p = PARSER.malloc(24, Life::A);
    let q = other.malloc(24, Life::A);
    // SAFETY: p is live; the wrong size is reported and nothing is freed.
    let m = unsafe { PARSER.try_free(p, 4000, Life::A) }.unwrap_err();
    assert_eq!(m.label.as_str(), "parser");
    let text = m.to_string();
    assert!(text.starts_with("cohort [parser]: bad free of"), "{text}");
    // A pointer of the other allocator, freed into this one: this one complains.
    // SAFETY: q is not PARSER's; reported, nothing freed.
    let m = unsafe { PARSER.try_free(q, 24, Life::A) }.unwrap_err();
    assert!(m.to_string().starts_with("cohort [parser]:"), "{m}");
    // SAFETY: p is not `other`'s; reported, nothing freed.
    let m = unsafe { other.try_free(p, 24, Life::A) }.unwrap_err();
    assert!(m.to_string().starts_with("cohort [renderer]:"), "{m}");
    // The panicking free's message too.
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: reported, nothing freed.
        unsafe { other.free(q, 48, Life::B) }
    }));
    let msg = *caught.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.starts_with("cohort [renderer]: bad free"), "{msg}");
    // An unlabelled allocator's message is as before.
    let plain: Cohort<Life> = Cohort::new();
    // SAFETY: p is not `plain`'s; reported.
    let m = unsafe { plain.try_free(p, 24, Life::A) }.unwrap_err();
    assert!(m.to_string().starts_with("cohort: bad free"), "{m}");
    // SAFETY: both live, freed with their sizes and classes.
    unsafe {
        PARSER.free(p, 24, Life::A);
        other.free(q, 24, Life::A);
    }
}

#[test]
fn stats_and_verify_errors_name_the_allocator() {
    let a: Cohort<Life> = Cohort::new();
    a.set_label("cache");
    let p = a.malloc(64, Life::B);
    let s = a.stats();
    assert_eq!(s.label.as_str(), "cache");
    assert!(s.to_string().starts_with("allocator cache\n"), "{s}");
    // A block header damaged by a stray write (the magic, after the header's first 44
    // bytes): verify names the allocator.
    let block = a.block_of(p, 64).unwrap() as *mut u32;
    // SAFETY: the header of a live block, writable; restored below before any other use.
    let magic = unsafe { block.add(11).read() };
    // SAFETY: as above.
    unsafe { block.add(11).write(0xdead_beef) };
    // SAFETY: no other thread uses `a`.
    let e = unsafe { a.verify() }.unwrap_err();
    // SAFETY: as above.
    unsafe { block.add(11).write(magic) };
    assert_eq!(e.label, Label::new("cache"));
    assert!(
        e.to_string().starts_with("cohort [cache]: verify: block"),
        "{e}"
    );
    assert!(e.to_string().contains("magic 0xdeadbeef"), "{e}");
    // SAFETY: no other thread uses `a`.
    unsafe { a.verify() }.expect("restored");
    // SAFETY: allocated above.
    unsafe { a.free(p, 64, Life::B) };
}

#[test]
fn a_label_is_cut_at_a_character_boundary_and_may_change_while_read() {
    assert_eq!(Label::new("").as_str(), "");
    assert_eq!(Label::new(&"x".repeat(100)).as_str().len(), LABEL_BYTES);
    let cut = Label::new(&"ж".repeat(40));
    assert_eq!(cut.as_str(), "ж".repeat(LABEL_BYTES / 2));
    assert_eq!(format!("{:?}", Label::new("a\"b")), "\"a\\\"b\"");
    // Readers racing a setter see one label or a valid mix, never invalid text.
    let a: Cohort<Life> = Cohort::new();
    let names = [
        "é".repeat(15),
        "short".to_string(),
        "中文标签中文标签中文".to_string(),
    ];
    let start = Barrier::new(3);
    std::thread::scope(|s| {
        s.spawn(|| {
            start.wait();
            for i in 0..20_000 {
                a.set_label(&names[i % names.len()]);
            }
        });
        for _ in 0..2 {
            s.spawn(|| {
                start.wait();
                for _ in 0..20_000 {
                    let l = a.label();
                    assert!(l.as_str().len() <= LABEL_BYTES);
                    assert!(std::str::from_utf8(l.as_str().as_bytes()).is_ok());
                }
            });
        }
    });
}

#[test]
fn a_shared_regions_label_is_kept_in_the_region() {
    let path = std::env::temp_dir().join(format!("cohort-tags-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let place = Place::File(&path);
    let region = SharedCohort::<Life>::create(place, CreateOptions::new(16 << 20)).unwrap();
    assert!(region.label().is_empty());
    region.set_label("journal");
    let p = region.malloc(40, Life::A);
    // SAFETY: p is live; reported, nothing freed.
    let m = unsafe { region.try_free(p, 400, Life::A) }.unwrap_err();
    assert!(m.to_string().starts_with("cohort [journal]:"), "{m}");
    // SAFETY: allocated above.
    unsafe { region.free(p, 40, Life::A) };
    drop(region);
    let again = SharedCohort::<Life>::open(place, cohort::OpenOptions::new()).unwrap();
    assert_eq!(
        again.label().as_str(),
        "journal",
        "the label is the region's"
    );
    assert!(again.stats().to_string().starts_with("allocator journal"));
    drop(again);
    SharedCohort::<Life>::remove(place).unwrap();
}
