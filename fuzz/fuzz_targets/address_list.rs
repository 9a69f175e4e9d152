//! Header address lists (From, To, Cc) of untrusted messages: the RFC 5322 parser
//! the signature verdict binds to, the From field of a header block, and the lenient
//! reader the relay uses for Bcc detection.
#![no_main]
use libfuzzer_sys::fuzz_target;
use smimegate::mime;
use smimegate::relay::headers;
use smimegate::smime::verify::FromField;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(list) = mime::parse_address_list(&text) {
        // What parses once parses the same when written back as a list.
        let again = mime::parse_address_list(&list.join(", "));
        assert_eq!(again.as_ref(), Ok(&list), "{text:?}");
    }
    let _ = headers::addresses(&text);
    let _ = FromField::of_message(data);
});
