//! What the kernel says about this process's memory: the `/proc/self/smaps` fields of a
//! mapping, the NUMA memory policy of a page, and which pages are resident.

/// Bytes of the 4 KiB pages touching `[p, p + len)` that are resident in RAM (`mincore`).
pub fn resident_bytes(p: *const u8, len: usize) -> usize {
    const PAGE: usize = 4096;
    let start = p as usize / PAGE * PAGE;
    let pages = (p as usize + len).div_ceil(PAGE) - start / PAGE;
    let mut v = vec![0u8; pages];
    // SAFETY: `v` holds a byte per page of the range, which the caller has mapped.
    let rc = unsafe { libc::mincore(start as *mut libc::c_void, pages * PAGE, v.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore");
    v.iter().filter(|&&b| b & 1 != 0).count() * PAGE
}

/// The 4 KiB pages touching `[from, to)` that are resident in RAM (`mincore`).
pub fn resident_pages(from: usize, to: usize) -> usize {
    resident_bytes(from as *const u8, to - from) / 4096
}

/// The fields of the `/proc/self/smaps` entry of the mapping holding `p`: (name, kB).
pub fn smaps_of(p: *const u8) -> Vec<(String, u64)> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
    let mut inside = false;
    let mut fields = Vec::new();
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) {
                if inside {
                    break;
                }
                inside = (start..end).contains(&(p as usize));
                if inside {
                    println!("{line}");
                }
                continue;
            }
        }
        if inside {
            if let Some((name, rest)) = line.split_once(':') {
                let kb = rest.split_whitespace().next().and_then(|v| v.parse().ok());
                if let Some(kb) = kb {
                    fields.push((name.to_string(), kb));
                }
            }
        }
    }
    assert!(!fields.is_empty(), "no mapping holds {p:p}");
    fields
}

/// One field (kB) of the mapping holding `p`, printed as smaps has it.
pub fn smaps_field(p: *const u8, name: &str) -> u64 {
    let kb = smaps_of(p)
        .into_iter()
        .find(|(n, _)| n == name)
        .map_or(0, |(_, kb)| kb);
    println!("{name}: {kb} kB");
    kb
}

/// The memory policy of the page at `p`: (mode, nodes).
pub fn memory_policy(p: *const u8) -> Result<(i32, u64), i32> {
    const MPOL_F_ADDR: libc::c_ulong = 1 << 1;
    let mut mode: libc::c_int = 0;
    let mut mask: libc::c_ulong = 0;
    // SAFETY: the out-parameters are ours, one word of nodes (65 counts one more).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_get_mempolicy,
            &mut mode as *mut libc::c_int,
            &mut mask as *mut libc::c_ulong,
            65usize,
            p,
            MPOL_F_ADDR,
        )
    };
    if rc == 0 {
        Ok((mode, mask as u64))
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}
