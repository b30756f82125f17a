//! The process's descriptor table, made full on purpose: for tests of
//! EMFILE. A test binary that uses it must hold that one test only, since
//! the limit is the whole process's.

use std::fs::File;

/// Restores the descriptor limit when dropped (also when the test fails).
pub struct Limit(libc::rlimit);

impl Limit {
    pub fn lower_to(soft: u64) -> Limit {
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit into the struct we pass.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }, 0);
        let new = libc::rlimit {
            rlim_cur: soft.min(old.rlim_max),
            rlim_max: old.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) }, 0);
        Limit(old)
    }
}

impl Drop for Limit {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.0) };
    }
}

/// Opens /dev/null until the table is full.
pub fn fill_descriptor_table() -> Vec<File> {
    let mut fillers = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(file) => fillers.push(file),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => return fillers,
            Err(e) => panic!("unexpected error while filling the table: {e}"),
        }
        assert!(fillers.len() < 100_000, "the limit did not apply");
    }
}
