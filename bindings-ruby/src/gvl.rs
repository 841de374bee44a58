//! Running Rust code with the GVL released.
//!
//! `rb_thread_call_without_gvl2` (unlike the variant without the 2) never longjmps over our
//! frames: when an interrupt is pending it returns without calling the function, and we check
//! interrupts afterwards through `protect`, which turns a raise into a Rust `Err`.

use magnus::Error;
use std::ffi::c_void;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

struct Call<F, R> {
    func: Option<F>,
    result: Option<std::thread::Result<R>>,
}

unsafe extern "C" fn trampoline<F: FnOnce() -> R, R>(data: *mut c_void) -> *mut c_void {
    // SAFETY: `data` is the `Call` owned by `without_gvl`'s frame, alive during the call.
    let call = unsafe { &mut *(data as *mut Call<F, R>) };
    if let Some(func) = call.func.take() {
        // A panic must not unwind into Ruby's C frames.
        call.result = Some(catch_unwind(AssertUnwindSafe(func)));
    }
    std::ptr::null_mut()
}

/// Ruby calls this to wake a blocked thread (Thread#kill, a signal). Every wait we run is bounded
/// (about 100 ms), so there is nothing to cut short: the thread comes back by itself and checks.
unsafe extern "C" fn bounded_wait_ends_by_itself(_: *mut c_void) {}

/// Runs `func` without the GVL. `None` when Ruby had an interrupt pending and did not run it:
/// call [`check_interrupts`] then. `func` must not touch any Ruby object.
pub fn without_gvl<F: FnOnce() -> R, R>(func: F) -> Option<R> {
    let mut call = Call {
        func: Some(func),
        result: None,
    };
    // SAFETY: the trampoline matches `Call<F, R>` and the pointer outlives the call.
    unsafe {
        rb_sys::rb_thread_call_without_gvl2(
            Some(trampoline::<F, R>),
            &mut call as *mut Call<F, R> as *mut c_void,
            Some(bounded_wait_ends_by_itself),
            std::ptr::null_mut(),
        );
    }
    match call.result {
        Some(Ok(value)) => Some(value),
        Some(Err(panic)) => resume_unwind(panic),
        None => None,
    }
}

/// Runs pending interrupts (signal traps, Thread#kill, Thread#raise, Timeout); a resulting raise
/// comes back as `Err`, so Rust frames unwind normally before Ruby sees it.
pub fn check_interrupts() -> Result<(), Error> {
    magnus::rb_sys::protect(|| {
        // SAFETY: called with the GVL held, inside protect.
        unsafe { rb_sys::rb_thread_check_ints() };
        rb_sys::Qnil as rb_sys::VALUE
    })
    .map(|_| ())
}

/// Runs a blocking engine call with the GVL released, retrying after interrupts were handled.
pub fn blocking<R>(mut func: impl FnMut() -> R) -> Result<R, Error> {
    loop {
        if let Some(value) = without_gvl(&mut func) {
            return Ok(value);
        }
        check_interrupts()?;
    }
}

/// Waits for an engine operation in slices of 100 ms without the GVL, checking interrupts in
/// between: Ctrl-C, TERM or Thread#kill reach a thread waiting for a slow or absent broker.
/// An interrupt drops the operation, which the engine then finishes in the background.
pub fn wait_pending<T: Send + 'static>(
    mut pending: cleats_core::Pending<T>,
) -> Result<cleats_core::Result<T>, Error> {
    loop {
        match without_gvl(|| pending.wait(std::time::Duration::from_millis(100))) {
            Some(Some(result)) => return Ok(result),
            Some(None) | None => check_interrupts()?,
        }
    }
}
