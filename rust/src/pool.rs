//! A bounded pool of reusable items (encode buffers) with hit/miss counters.
//!
//! Encoding a message into a fresh buffer costs an allocation that grows with the message;
//! reusing a buffer that already grew skips it. The pool bounds idle memory twice: at most
//! `max_items` items are kept, and an item whose retained size exceeds `max_item_bytes` is
//! dropped on release (one 50 MB tool output must not pin 50 MB forever).
//!
//! The pool is generic so the Python binding can hold `bytearray`s while Rust tests and benches
//! use `Vec<u8>`; the caller resets an item and reports its size, because only the caller knows
//! how (a Python buffer needs the GIL).

/// What [`Pool::release`] did with an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    Kept,
    /// The pool already held `max_items`.
    DroppedFull,
    /// The item retained more than `max_item_bytes`.
    DroppedOversized,
}

#[derive(Debug)]
pub struct Pool<T> {
    items: Vec<T>,
    max_items: usize,
    max_item_bytes: usize,
    hits: u64,
    misses: u64,
}

impl<T> Pool<T> {
    pub fn new(max_items: usize, max_item_bytes: usize) -> Self {
        Pool {
            items: Vec::new(),
            max_items,
            max_item_bytes,
            hits: 0,
            misses: 0,
        }
    }

    /// A pooled item (a hit) or, when none is pooled, `make()` (a miss).
    pub fn acquire_with(&mut self, make: impl FnOnce() -> T) -> T {
        match self.items.pop() {
            Some(item) => {
                self.hits += 1;
                item
            }
            None => {
                self.misses += 1;
                make()
            }
        }
    }

    /// Offer an already-reset `item` that retains `retained_bytes` of memory back to the pool.
    pub fn release(&mut self, item: T, retained_bytes: usize) -> Released {
        if retained_bytes > self.max_item_bytes {
            Released::DroppedOversized
        } else if self.items.len() >= self.max_items {
            Released::DroppedFull
        } else {
            self.items.push(item);
            Released::Kept
        }
    }

    pub fn hits(&self) -> u64 {
        self.hits
    }

    pub fn misses(&self) -> u64 {
        self.misses
    }

    /// Items pooled right now.
    pub fn available(&self) -> usize {
        self.items.len()
    }

    /// The items pooled right now, most recently released last.
    pub fn pooled(&self) -> &[T] {
        &self.items
    }

    pub fn max_items(&self) -> usize {
        self.max_items
    }

    pub fn max_item_bytes(&self) -> usize {
        self.max_item_bytes
    }
}

impl Pool<Vec<u8>> {
    /// An empty byte buffer, reusing a pooled allocation when there is one.
    pub fn acquire_buffer(&mut self) -> Vec<u8> {
        self.acquire_with(Vec::new)
    }

    /// Clear `buffer` (keeping its allocation) and offer it back; its capacity is what counts
    /// against `max_item_bytes`.
    pub fn release_buffer(&mut self, mut buffer: Vec<u8>) -> Released {
        buffer.clear();
        let capacity = buffer.capacity();
        self.release(buffer, capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_hits_and_misses() {
        let mut pool: Pool<Vec<u8>> = Pool::new(4, 1024);
        let a = pool.acquire_buffer();
        let b = pool.acquire_buffer();
        assert_eq!((pool.hits(), pool.misses(), pool.available()), (0, 2, 0));
        assert_eq!(pool.release_buffer(a), Released::Kept);
        assert_eq!(pool.release_buffer(b), Released::Kept);
        assert_eq!(pool.available(), 2);
        let _c = pool.acquire_buffer();
        let _d = pool.acquire_buffer();
        let _e = pool.acquire_buffer();
        assert_eq!((pool.hits(), pool.misses(), pool.available()), (2, 3, 0));
    }

    #[test]
    fn reuse_keeps_the_allocation_and_clears_the_contents() {
        let mut pool: Pool<Vec<u8>> = Pool::new(1, 1 << 20);
        let mut buf = pool.acquire_buffer();
        buf.extend_from_slice(&[7; 1000]);
        let ptr = buf.as_ptr();
        let capacity = buf.capacity();
        pool.release_buffer(buf);
        let again = pool.acquire_buffer();
        assert!(again.is_empty());
        assert_eq!((again.as_ptr(), again.capacity()), (ptr, capacity));
    }

    #[test]
    fn bounded_by_count() {
        let mut pool: Pool<Vec<u8>> = Pool::new(2, 1024);
        let bufs: Vec<_> = (0..3).map(|_| pool.acquire_buffer()).collect();
        let outcomes: Vec<_> = bufs.into_iter().map(|b| pool.release_buffer(b)).collect();
        assert_eq!(
            outcomes,
            [Released::Kept, Released::Kept, Released::DroppedFull]
        );
        assert_eq!(pool.available(), 2);
    }

    #[test]
    fn oversized_items_are_dropped() {
        let mut pool: Pool<Vec<u8>> = Pool::new(8, 64);
        let mut big = pool.acquire_buffer();
        big.resize(65, 0);
        assert_eq!(pool.release_buffer(big), Released::DroppedOversized);
        let small = Vec::with_capacity(64);
        assert_eq!(pool.release_buffer(small), Released::Kept);
        assert_eq!(pool.available(), 1);
    }

    #[test]
    fn zero_capacity_pool_keeps_nothing() {
        let mut pool: Pool<u32> = Pool::new(0, usize::MAX);
        assert_eq!(pool.acquire_with(|| 5), 5);
        assert_eq!(pool.release(5, 0), Released::DroppedFull);
        assert_eq!((pool.hits(), pool.misses(), pool.available()), (0, 1, 0));
    }
}
