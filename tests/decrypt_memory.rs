//! What BER→DER conversion of an incoming CMS costs in memory (DESIGN §8: no unbounded
//! memory on hostile input). A counting global allocator measures the peak that each
//! conversion adds; this binary has one test function, so no other test thread
//! allocates while it measures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};

use smimegate::mime::Limits;
use smimegate::smime::{ber, decrypt};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::SeqCst) + by;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are
// only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Old and new block may both exist for a moment: count the new one first.
        grew(new_size);
        // SAFETY: forwarded with the caller's pointer, layout and size.
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result and the most memory it held at once beyond what
/// was allocated before (its result included).
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let result = f();
    (result, PEAK.load(Ordering::SeqCst) - base)
}

const MIB: usize = 1024 * 1024;

/// SEQUENCE (indefinite) { `element` repeated to about `size` bytes }.
fn indefinite_around(element: &[u8], size: usize) -> Vec<u8> {
    let mut ber = Vec::with_capacity(size + 4);
    ber.extend_from_slice(&[0x30, 0x80]);
    while ber.len() + element.len() + 2 <= size {
        ber.extend_from_slice(element);
    }
    ber.extend_from_slice(&[0, 0]);
    ber
}

/// `depth` nested indefinite-length SEQUENCEs around nothing.
fn chain(depth: usize) -> Vec<u8> {
    let mut chain = [0x30, 0x80].repeat(depth);
    chain.extend(std::iter::repeat_n(0u8, 2 * depth));
    chain
}

fn binary_message(der: &[u8]) -> Vec<u8> {
    let mut m = b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\
Content-Transfer-Encoding: binary\r\n\r\n"
        .to_vec();
    m.extend_from_slice(der);
    m
}

/// One line per measurement (`--no-capture` shows them): peak ÷ input size.
fn report(what: &str, peak: usize, input: usize) {
    eprintln!(
        "{what:<28} input {:>6.1} MiB  peak {:>7.2} MiB  peak/input {:.3}",
        input as f64 / MIB as f64,
        peak as f64 / MIB as f64,
        peak as f64 / input as f64
    );
}

#[test]
fn ber_to_der_memory_is_bounded_by_the_input_and_der_costs_nothing() {
    // The hostile shapes at 16 MiB (the peak is a ratio; this keeps the unoptimised
    // test build quick), the realistic ones at the 50 MiB message limit.
    let hostile = 16 * MIB;
    let size = 50 * MIB;

    // Four million empty indefinite-length SEQUENCEs side by side: the most elements
    // the input can hold. A tree of parsed elements needed 1.3 GiB for 50 MiB of this.
    let flat = indefinite_around(&[0x30, 0x80, 0, 0], hostile);
    let (der, peak) = peak_of(|| ber::to_der(&flat, 64).expect("converts").len());
    report("flat indefinite BER", peak, flat.len());
    let content = (flat.len() - 4) / 4 * 2;
    assert_eq!(
        der,
        2 + (usize::BITS - content.leading_zeros()).div_ceil(8) as usize + content
    );
    assert!(
        peak <= 2 * flat.len(),
        "flat: {} MiB for {} MiB of input",
        peak / MIB,
        flat.len() / MIB
    );

    // The same as chains 60 deep.
    let nested = indefinite_around(&chain(60), hostile);
    let (_, peak) = peak_of(|| ber::to_der(&nested, 64).expect("converts").len());
    report("nested indefinite BER", peak, nested.len());
    assert!(
        peak <= 2 * nested.len(),
        "nested: {} MiB for {} MiB of input",
        peak / MIB,
        nested.len() / MIB
    );

    // What Thunderbird sends: one large segmented OCTET STRING. Output and little else.
    let segment = [[0x04, 0x82, 0x03, 0xe8].as_slice(), &[0xa5; 1000]].concat();
    let mut segmented = vec![0x30, 0x80, 0x24, 0x80];
    while segmented.len() + segment.len() + 4 <= size {
        segmented.extend_from_slice(&segment);
    }
    segmented.extend_from_slice(&[0, 0, 0, 0]);
    let (out, peak) = peak_of(|| ber::to_der(&segmented, 64).expect("converts").len());
    report("segmented OCTET STRING", peak, segmented.len());
    assert!(
        peak <= out + MIB,
        "segmented: {} MiB for {} MiB of output",
        peak / MIB,
        out / MIB
    );

    // DER input: validated, returned as it is, nothing allocated.
    let der_input = {
        let body = [0x04, 0x81, 0x80]
            .into_iter()
            .chain([0x5a; 0x80])
            .collect::<Vec<u8>>()
            .repeat((size - 16) / 131);
        let mut der = vec![0x30, 0x84];
        der.extend_from_slice(&u32::try_from(body.len()).expect("fits").to_be_bytes());
        der.extend_from_slice(&body);
        der
    };
    let (borrowed, peak) = peak_of(|| {
        matches!(
            ber::to_der(&der_input, 64).expect("DER"),
            Cow::Borrowed(b) if b.len() == der_input.len()
        )
    });
    report("DER", peak, der_input.len());
    assert!(borrowed, "DER comes back borrowed");
    assert!(peak < 64 * 1024, "DER cost {peak} bytes");

    // Through the message path: the body is copied once, the DER not again.
    let message = binary_message(&der_input);
    let (cms, peak) = peak_of(|| {
        let limits = Limits {
            max_size: 2 * size,
            ..Limits::default()
        };
        decrypt::cms_from_message(&message, &limits)
            .expect("cms")
            .len()
    });
    assert_eq!(cms, der_input.len());
    report("binary message to DER", peak, der_input.len());
    assert!(
        peak <= der_input.len() + MIB,
        "message: {} MiB for {} MiB of DER",
        peak / MIB,
        der_input.len() / MIB
    );
}
