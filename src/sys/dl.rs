//! The dynamic loader, for the backends that open their library at run time (verbs,
//! fabric).
//!
//! Errors are the loader's own message (`dlerror`), for the caller to put in a sentence
//! that says what to install.

use std::ffi::{c_void, CStr, CString};

/// A shared library opened with `RTLD_NOW | RTLD_LOCAL` and never closed: its symbols may
/// be kept for the life of the process (providers keep threads and state in it).
pub(crate) struct Library {
    handle: *mut c_void,
}

impl Library {
    /// Opens `name` (a soname such as `libfabric.so.1`), resolving every symbol now so that
    /// a broken installation fails here and not in the middle of a call. `Err`: why not.
    pub(crate) fn open(name: &str) -> Result<Library, String> {
        let c = CString::new(name).map_err(|e| e.to_string())?;
        // SAFETY: a NUL-terminated name.
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(dlerror());
        }
        Ok(Library { handle })
    }

    /// The address of symbol `name` (`dlsym`). `Err`: why not.
    pub(crate) fn sym(&self, name: &str) -> Result<*mut c_void, String> {
        let c = CString::new(name).map_err(|e| e.to_string())?;
        // SAFETY: `handle` is a live library handle (never closed) and `c` a
        // NUL-terminated name.
        let p = unsafe { libc::dlsym(self.handle, c.as_ptr()) };
        if p.is_null() {
            Err(dlerror())
        } else {
            Ok(p)
        }
    }

    /// The address of symbol `name` at symbol version `version` (`dlvsym`), for a library
    /// that also exports older versions of it with other layouts. `Err`: why not.
    pub(crate) fn vsym(&self, name: &str, version: &str) -> Result<*mut c_void, String> {
        let (c, v) = (
            CString::new(name).map_err(|e| e.to_string())?,
            CString::new(version).map_err(|e| e.to_string())?,
        );
        // SAFETY: `handle` is a live library handle (never closed); `c` and `v` are
        // NUL-terminated.
        let p = unsafe { libc::dlvsym(self.handle, c.as_ptr(), v.as_ptr()) };
        if p.is_null() {
            Err(dlerror())
        } else {
            Ok(p)
        }
    }
}

/// The dynamic loader's last error message, copied.
fn dlerror() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated string valid until the next dl call
    // on this thread; it is copied at once.
    let p = unsafe { libc::dlerror() };
    if p.is_null() {
        "unknown dlerror".into()
    } else {
        // SAFETY: non-null, NUL-terminated (see above).
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_of_a_loaded_library_resolve_and_misses_say_why() {
        let e = Library::open("liboxccl-no-such-library.so.0")
            .err()
            .unwrap();
        assert!(e.contains("liboxccl-no-such-library"), "{e}");
        let libc = Library::open("libc.so.6").unwrap();
        assert!(!libc.sym("getpid").unwrap().is_null());
        assert!(libc.sym("oxccl_no_such_symbol").is_err());
        assert!(libc.vsym("getpid", "NO_SUCH_VERSION_1.0").is_err());
    }
}
