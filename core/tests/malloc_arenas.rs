//! An engine caps the process's malloc arenas (core/src/malloc_arenas.rs). Its own test binary:
//! the count depends on every thread the process ever ran, so no other test may share it.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

use cleats_core::malloc_arenas::WORKER_ARENAS;
use cleats_core::{Engine, Options};
use std::sync::{Arc, Barrier};

/// The arenas glibc has created so far: one `<heap nr=...>` per arena in malloc_info's XML.
fn arena_count() -> usize {
    let mut buf: *mut libc::c_char = std::ptr::null_mut();
    let mut len: libc::size_t = 0;
    // SAFETY: open_memstream's buffer is valid after fclose and is ours to free.
    let xml = unsafe {
        let stream = libc::open_memstream(&mut buf, &mut len);
        assert!(!stream.is_null(), "open_memstream failed");
        assert_eq!(libc::malloc_info(0, stream), 0, "malloc_info failed");
        libc::fclose(stream);
        let xml = std::slice::from_raw_parts(buf as *const u8, len).to_vec();
        libc::free(buf.cast());
        String::from_utf8(xml).unwrap()
    };
    xml.matches("<heap nr=").count()
}

/// `threads` threads that each allocate and hold small blocks (from their arena, not mmap) at
/// the same time, so that each would need an arena of its own.
fn allocate_on_threads(threads: usize) {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let blocks: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 1024]).collect();
                barrier.wait();
                std::hint::black_box(&blocks);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// In a child process (this test binary, re-run): arenas before an engine, and after it and 12
/// allocating threads.
fn child_counts(arena_max: Option<&str>) -> (usize, usize) {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env_remove("MALLOC_ARENA_MAX")
    .env_remove("GLIBC_TUNABLES");
    if let Some(n) = arena_max {
        cmd.env("MALLOC_ARENA_MAX", n);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}");
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("arenas ").map(|(_, counts)| counts))
        .unwrap_or_else(|| panic!("no count from the child: {stdout}"));
    let mut counts = line.split_whitespace().map(|n| n.parse().unwrap());
    (counts.next().unwrap(), counts.next().unwrap())
}

#[test]
#[ignore = "a step of the test below, which runs it in a child process"]
fn child() {
    let before = arena_count();
    Engine::new(&Options::new()).unwrap();
    allocate_on_threads(12);
    println!("arenas {before} {}", arena_count());
}

#[test]
fn an_engine_makes_the_threads_of_its_process_share_two_arenas() {
    let (before, after) = child_counts(None);
    assert!(
        after <= before.max(WORKER_ARENAS as usize),
        "{after} arenas after 12 allocating threads, {before} before the engine"
    );
    // The user's MALLOC_ARENA_MAX wins: the same threads then make arenas of their own.
    let (before, after) = child_counts(Some("16"));
    assert!(
        after >= before + 8,
        "with MALLOC_ARENA_MAX=16: {after} arenas after 12 allocating threads, {before} before"
    );
}
