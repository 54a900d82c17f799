use cohort::Cohort;
use std::alloc::Layout;

#[test]
fn smoke() {
    let a: Cohort = Cohort::new();
    let mut v = Vec::new();
    for size in [1usize, 2, 3, 4, 8, 16, 24, 100, 1000, 5000, 16384, 20000, 1 << 20] {
        for i in 0..3000 {
            let p = a.malloc(size, ());
            assert!(!p.is_null());
            unsafe { p.write_bytes((i % 251) as u8, size) };
            v.push((p, size, (i % 251) as u8));
        }
    }
    for &(p, size, b) in v.iter().rev() {
        for k in 0..size {
            assert_eq!(unsafe { *p.add(k) }, b);
        }
        unsafe { a.free(p, size, ()) };
    }
    let l = Layout::from_size_align(24, 8).unwrap();
    let p = a.alloc(l, ());
    assert_eq!(a.usable_size(l), 24);
    unsafe { a.dealloc(p, l, ()) };
    a.for_each_block(|b| eprintln!("{b:?}"));
}
