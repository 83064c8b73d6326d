//! The two messages of `grpc.health.v1.Health/Check`, by hand.
//!
//! `HealthCheckRequest` is one string field (`service`, tag 1) and
//! `HealthCheckResponse` one enum field (`status`, tag 1): a SERVING
//! answer is the two bytes `08 01`. Writing and reading that much
//! protobuf here is shorter than a code generator and a runtime (prost)
//! would be, and it takes nothing more from the network than it needs.

/// `HealthCheckResponse.status` SERVING.
pub(super) const SERVING: u64 = 1;

/// The request body: `service` as a length-prefixed gRPC message (not
/// compressed).
pub(super) fn request(service: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(service.len() + 6);
    if !service.is_empty() {
        // Field 1, wire type 2 (length-delimited).
        message.push(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut body = Vec::with_capacity(5 + message.len());
    body.push(0);
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    body
}

/// The `status` of the one length-prefixed gRPC message in `body`:
/// 0 (UNKNOWN) when the message leaves it out, as protobuf does for
/// zero values.
pub(super) fn response_status(body: &[u8]) -> Result<u64, String> {
    let [compressed, l0, l1, l2, l3, message @ ..] = body else {
        return Err("answered no gRPC message".to_owned());
    };
    if *compressed != 0 {
        return Err("answered a compressed gRPC message".to_owned());
    }
    let length = u32::from_be_bytes([*l0, *l1, *l2, *l3]) as usize;
    let Some(mut message) = message.get(..length) else {
        return Err("answered a truncated gRPC message".to_owned());
    };
    let bad = || "answered a malformed HealthCheckResponse".to_owned();
    let mut status = 0;
    while !message.is_empty() {
        let key = varint(&mut message).ok_or_else(bad)?;
        match key & 7 {
            0 => {
                let value = varint(&mut message).ok_or_else(bad)?;
                if key >> 3 == 1 {
                    status = value;
                }
            }
            // Fields a newer schema may add: skipped by their wire type.
            1 => message = message.get(8..).ok_or_else(bad)?,
            2 => {
                let n = varint(&mut message).ok_or_else(bad)?;
                let n = usize::try_from(n).map_err(|_| bad())?;
                message = message.get(n..).ok_or_else(bad)?;
            }
            5 => message = message.get(4..).ok_or_else(bad)?,
            _ => return Err(bad()),
        }
    }
    Ok(status)
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads one varint from the front of `bytes`; `None` when it is cut short
/// or longer than 10 bytes.
fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut n = 0u64;
    for (i, b) in bytes.iter().take(10).enumerate() {
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *bytes = &bytes[i + 1..];
            return Some(n);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_a_grpc_frame_around_the_service_name() {
        assert_eq!(request(""), [0, 0, 0, 0, 0]);
        assert_eq!(
            request("cart"),
            [0, 0, 0, 0, 6, 0x0a, 4, b'c', b'a', b'r', b't']
        );
        // A name of 200 bytes: a two-byte length.
        let long = "x".repeat(200);
        let r = request(&long);
        assert_eq!(&r[..8], &[0, 0, 0, 0, 203, 0x0a, 0xc8, 0x01]);
        assert_eq!(r.len(), 5 + 203);
    }

    #[test]
    fn responses_give_their_status_and_bad_ones_are_errors() {
        assert_eq!(response_status(&[0, 0, 0, 0, 2, 0x08, 1]), Ok(SERVING));
        assert_eq!(response_status(&[0, 0, 0, 0, 2, 0x08, 2]), Ok(2));
        // Status left out: UNKNOWN.
        assert_eq!(response_status(&[0, 0, 0, 0, 0]), Ok(0));
        // An unknown string field before the status is skipped.
        assert_eq!(
            response_status(&[0, 0, 0, 0, 5, 0x12, 1, b'x', 0x08, 1]),
            Ok(SERVING)
        );
        for bad in [
            &[][..],
            &[0, 0, 0],
            &[1, 0, 0, 0, 2, 0x08, 1],
            &[0, 0, 0, 0, 9, 0x08, 1],
            &[0, 0, 0, 0, 2, 0x08, 0x80],
            &[0, 0, 0, 0, 3, 0x12, 5, b'x'],
            &[0, 0, 0, 0, 1, 0x0b],
        ] {
            assert!(response_status(bad).is_err(), "{bad:?}");
        }
    }
}
