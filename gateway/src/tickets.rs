//! TLS session-ticket keys for the whole process, rotated, and handed to
//! the next process on a hot upgrade so that clients resume their
//! sessions across it (rustls's own ticketer keeps its keys sealed, so a
//! new process could decrypt no ticket the old one issued).
//!
//! A ticket is `key name (16) | nonce (12) | AES-256-GCM(state) | tag`.
//! The current key encrypts; it and the previous one decrypt. Keys rotate
//! every [`ROTATE_EVERY`], so a ticket lives at most twice that.

use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// How often the encrypting key changes.
const ROTATE_EVERY: Duration = Duration::from_secs(6 * 3600);
const NAME_LEN: usize = 16;
const SECRET_LEN: usize = 32;

/// One key: its name (which ticket it opens) and its secret.
#[derive(Clone, Copy)]
struct KeyBytes {
    name: [u8; NAME_LEN],
    secret: [u8; SECRET_LEN],
}

struct Key {
    bytes: KeyBytes,
    aead: LessSafeKey,
}

impl Key {
    fn new(bytes: KeyBytes) -> Option<Key> {
        let aead = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &bytes.secret).ok()?);
        Some(Key { bytes, aead })
    }

    fn random() -> Option<Key> {
        let rng = SystemRandom::new();
        let mut bytes = KeyBytes {
            name: [0; NAME_LEN],
            secret: [0; SECRET_LEN],
        };
        rng.fill(&mut bytes.name).ok()?;
        rng.fill(&mut bytes.secret).ok()?;
        Key::new(bytes)
    }
}

struct Keys {
    current: Key,
    previous: Option<Key>,
    since: Instant,
}

/// The process's ticket keys, shared by every worker and listener.
pub(crate) struct Tickets {
    keys: RwLock<Keys>,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        f.write_str("Tickets")
    }
}

static TICKETS: OnceLock<Option<Arc<Tickets>>> = OnceLock::new();

/// The process's ticket keys: those handed over by [`adopt`] if it ran
/// first, else fresh ones. `None` if no random key could be made.
pub(crate) fn tickets() -> Option<Arc<Tickets>> {
    TICKETS
        .get_or_init(|| {
            Some(Arc::new(Tickets {
                keys: RwLock::new(Keys {
                    current: Key::random()?,
                    previous: None,
                    since: Instant::now(),
                }),
            }))
        })
        .clone()
}

/// Takes over the keys `export` wrote in another process (before any TLS
/// listener starts); false when they are malformed or keys exist already.
pub fn adopt(exported: &str) -> bool {
    let mut fields = exported.split(',');
    // The current key's age, so that an upgrade does not restart its clock.
    let age = fields
        .next()
        .and_then(|a| a.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or_default();
    let mut keys = fields.filter_map(parse);
    let Some(current) = keys.next().and_then(Key::new) else {
        return false;
    };
    let previous = keys.next().and_then(Key::new);
    TICKETS
        .set(Some(Arc::new(Tickets {
            keys: RwLock::new(Keys {
                current,
                previous,
                since: Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
            }),
        })))
        .is_ok()
}

/// The current key's age in seconds, then the keys in use, current first,
/// as hex, for the upgrade hand-over (a socket only the same user can
/// reach).
pub fn export() -> Option<String> {
    let tickets = tickets()?;
    let keys = tickets.keys.read().ok()?;
    let mut out = format!("{},", keys.since.elapsed().as_secs());
    out.push_str(&hex(&keys.current.bytes));
    if let Some(previous) = &keys.previous {
        out.push(',');
        out.push_str(&hex(&previous.bytes));
    }
    Some(out)
}

fn hex(bytes: &KeyBytes) -> String {
    bytes
        .name
        .iter()
        .chain(&bytes.secret)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse(text: &str) -> Option<KeyBytes> {
    let raw: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    if raw.len() != NAME_LEN + SECRET_LEN {
        return None;
    }
    let mut bytes = KeyBytes {
        name: [0; NAME_LEN],
        secret: [0; SECRET_LEN],
    };
    bytes.name.copy_from_slice(&raw[..NAME_LEN]);
    bytes.secret.copy_from_slice(&raw[NAME_LEN..]);
    Some(bytes)
}

impl Tickets {
    /// Rotates when the current key is due.
    fn rotate_if_due(&self) {
        let due = self
            .keys
            .read()
            .is_ok_and(|k| k.since.elapsed() >= ROTATE_EVERY);
        if !due {
            return;
        }
        if let (Ok(mut keys), Some(fresh)) = (self.keys.write(), Key::random())
            && keys.since.elapsed() >= ROTATE_EVERY
        {
            let old = std::mem::replace(&mut keys.current, fresh);
            keys.previous = Some(old);
            keys.since = Instant::now();
        }
    }
}

impl rustls::server::ProducesTickets for Tickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        (2 * ROTATE_EVERY).as_secs() as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.rotate_if_due();
        let keys = self.keys.read().ok()?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(NAME_LEN + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(&keys.current.bytes.name);
        out.extend_from_slice(&nonce);
        let mut sealed = plain.to_vec();
        keys.current
            .aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&keys.current.bytes.name),
                &mut sealed,
            )
            .ok()?;
        out.extend_from_slice(&sealed);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.rotate_if_due();
        let name = cipher.get(..NAME_LEN)?;
        let nonce = cipher.get(NAME_LEN..NAME_LEN + NONCE_LEN)?;
        let sealed = cipher.get(NAME_LEN + NONCE_LEN..)?;
        let keys = self.keys.read().ok()?;
        let key = [Some(&keys.current), keys.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|k| k.bytes.name == name)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain = key
            .aead
            .open_in_place(nonce, Aad::from(&key.bytes.name), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use rustls::server::ProducesTickets;

    use super::*;

    fn fresh() -> Tickets {
        Tickets {
            keys: RwLock::new(Keys {
                current: Key::random().unwrap(),
                previous: None,
                since: Instant::now(),
            }),
        }
    }

    #[test]
    fn a_ticket_opens_with_its_key_and_with_nothing_else() {
        let t = fresh();
        let ticket = t.encrypt(b"session state").unwrap();
        assert_eq!(t.decrypt(&ticket).unwrap(), b"session state");
        let mut forged = ticket.clone();
        *forged.last_mut().unwrap() ^= 1;
        assert!(t.decrypt(&forged).is_none());
        assert!(fresh().decrypt(&ticket).is_none());
        assert!(t.decrypt(&ticket[..10]).is_none());
        assert!(t.decrypt(&[]).is_none());
    }

    #[test]
    fn exported_keys_open_the_tickets_of_the_process_that_made_them() {
        let old = fresh();
        let ticket = old.encrypt(b"resume me").unwrap();
        // As `export` writes them.
        let text = hex(&old.keys.read().unwrap().current.bytes);
        let bytes = parse(&text).unwrap();
        let new = Tickets {
            keys: RwLock::new(Keys {
                current: Key::new(bytes).unwrap(),
                previous: None,
                since: Instant::now(),
            }),
        };
        assert_eq!(new.decrypt(&ticket).unwrap(), b"resume me");
        assert!(parse("zz").is_none());
        assert!(parse(&text[..40]).is_none());
    }

    #[test]
    fn a_rotated_key_still_opens_the_tickets_it_made() {
        let t = fresh();
        let ticket = t.encrypt(b"before").unwrap();
        t.keys.write().unwrap().since = Instant::now() - ROTATE_EVERY;
        let after = t.encrypt(b"after").unwrap();
        assert_ne!(ticket[..NAME_LEN], after[..NAME_LEN]);
        assert_eq!(t.decrypt(&ticket).unwrap(), b"before");
        assert_eq!(t.decrypt(&after).unwrap(), b"after");
    }
}
