//! Large zeroed arrays on transparent huge pages. A MAC table for a million stations spans
//! tens of megabytes; on 4 KB pages almost every lookup would miss the TLB as well as the
//! cache. (Vec cannot ask for huge pages, and no small crate does just this.)

use std::ops::Deref;
use std::ptr::NonNull;

/// Types whose all-zero bit pattern is a valid value.
///
/// # Safety
/// Implement only for such types.
pub unsafe trait Zeroable {}
// SAFETY: an atomic integer of zero is a valid zero.
unsafe impl Zeroable for std::sync::atomic::AtomicU32 {}
// SAFETY: as above.
unsafe impl Zeroable for std::sync::atomic::AtomicU64 {}

pub struct HugeArray<T> {
    ptr: NonNull<T>,
    len: usize,
    /// The whole mapping, alignment slack included.
    map: *mut libc::c_void,
    map_len: usize,
}

const HUGE_PAGE: usize = 2 << 20;

// SAFETY: like Box<[T]>, the array owns its elements.
unsafe impl<T: Send> Send for HugeArray<T> {}
// SAFETY: as above: shared access is access to the elements.
unsafe impl<T: Sync> Sync for HugeArray<T> {}

impl<T: Zeroable> HugeArray<T> {
    /// `len` zeroed elements. The kernel backs the mapping with 2 MB pages where it can
    /// (MADV_HUGEPAGE); it is zero-filled either way, and memory is only taken as pages are
    /// first written (a MAC table costs what it holds, not what it could hold).
    pub fn zeroed(len: usize) -> HugeArray<T> {
        let bytes = (len * std::mem::size_of::<T>()).max(1);
        // Huge pages need 2 MB-aligned addresses: map a little more and start at a boundary.
        let map_len = if bytes >= HUGE_PAGE { bytes + HUGE_PAGE } else { bytes };
        // SAFETY: an anonymous private mapping; the result is checked.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            std::alloc::handle_alloc_error(std::alloc::Layout::array::<T>(len).expect("layout"));
        }
        let start = if bytes >= HUGE_PAGE { (map as usize).next_multiple_of(HUGE_PAGE) } else { map as usize };
        // Advice only: without huge pages the array still works. A small array asks for none:
        // next to other mappings it could otherwise sit in a 2 MB page, all of it taken on
        // its first write.
        let advice = if bytes >= HUGE_PAGE { libc::MADV_HUGEPAGE } else { libc::MADV_NOHUGEPAGE };
        // SAFETY: advice on a range inside our own mapping.
        unsafe { libc::madvise(start as *mut libc::c_void, bytes, advice) };
        HugeArray { ptr: NonNull::new(start as *mut T).expect("mmap gives non-null"), len, map, map_len }
    }
}

impl<T> Deref for HugeArray<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` points to `len` zero-initialised (valid, see Zeroable) elements we own.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for HugeArray<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` made, once.
        unsafe {
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len));
            libc::munmap(self.map, self.map_len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    #[test]
    fn zeroed_and_writable() {
        let a: HugeArray<AtomicU64> = HugeArray::zeroed(1 << 20);
        assert_eq!(a.len(), 1 << 20);
        assert!(a.iter().step_by(4096).all(|x| x.load(Relaxed) == 0));
        a[12345].store(7, Relaxed);
        assert_eq!(a[12345].load(Relaxed), 7);
    }
}
