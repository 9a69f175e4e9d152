//! Partner CAs run by `openssl ca` (index, serials, `-gencrl`) and a small HTTP server
//! that serves their CRLs, for the revocation tests.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::run_ok;

/// A small HTTP/1.1 server on 127.0.0.1 serving the files of a directory (404 for
/// anything else), one connection at a time, counting requests.
pub struct CrlServer {
    pub port: u16,
    pub dir: PathBuf,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl CrlServer {
    pub fn start(dir: PathBuf) -> CrlServer {
        std::fs::create_dir_all(&dir).expect("server dir");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (root, counter, stopped) = (dir.clone(), hits.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let Ok(clone) = stream.try_clone() else {
                    continue;
                };
                let mut reader = BufReader::new(clone);
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if line == "\r\n" || line == "\n" => break,
                        Ok(_) => {}
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let path = request.split_whitespace().nth(1).unwrap_or("/");
                let body = (!path.contains(".."))
                    .then(|| std::fs::read(root.join(path.trim_start_matches('/'))).ok())
                    .flatten();
                let _ = match body {
                    Some(body) => stream
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/pkix-crl\r\n\
                                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .and_then(|()| stream.write_all(&body)),
                    None => stream.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    ),
                };
            }
        });
        CrlServer {
            port,
            dir,
            hits,
            stop,
        }
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    pub fn publish(&self, name: &str, der: &[u8]) {
        std::fs::write(self.dir.join(name), der).expect("publish CRL");
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for CrlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A partner CA run by `openssl ca` (index, serials, CRL numbers), whose certificates
/// name `crl_url` as their CRL distribution point (none when `None`).
pub struct CrlCa {
    pub dir: PathBuf,
    pub cnf: String,
    pub cert: String,
    pub crl_url: Option<String>,
    /// A subordinate CA's own certificate, carried in its people's signatures.
    pub carried: Option<String>,
}

/// A partner person: an S/MIME certificate and key from a [`CrlCa`].
pub struct Person {
    pub address: String,
    pub cert: String,
    pub key: String,
    /// The CA certificate a signature carries besides the signer's (a subordinate CA).
    pub carried: Option<String>,
}

impl CrlCa {
    pub fn new(base: &Path, name: &str, crl_url: Option<String>) -> CrlCa {
        let ca = CrlCa::prepare(base, name, crl_url);
        let p = |f: &str| ca.dir.join(f).display().to_string();
        run_ok(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &p("ca.key"),
                "-out",
                &p("ca.pem"),
                "-days",
                "30",
                "-subj",
                &format!("/CN=Revocation test CA {name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        ca
    }

    /// A subordinate CA certified by this one; its certificate names this CA's CRL
    /// (`self.crl_url`), its people's name `crl_url`.
    pub fn subordinate(&self, base: &Path, name: &str, crl_url: Option<String>) -> CrlCa {
        let mut sub = CrlCa::prepare(base, name, crl_url);
        let p = |f: &str| sub.dir.join(f).display().to_string();
        let mut ext =
            "[ext]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
                .to_string();
        if let Some(url) = &self.crl_url {
            ext.push_str(&format!("crlDistributionPoints=URI:{url}\n"));
        }
        std::fs::write(p("ext"), ext).expect("extensions");
        run_ok(
            "openssl",
            &[
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &p("ca.key"),
                "-out",
                &p("ca.csr"),
                "-subj",
                &format!("/CN=Revocation test sub-CA {name}"),
            ],
        );
        run_ok(
            "openssl",
            &[
                "ca",
                "-batch",
                "-config",
                &self.cnf,
                "-in",
                &p("ca.csr"),
                "-out",
                &p("ca.pem"),
                "-days",
                "20",
                "-notext",
                "-extfile",
                &p("ext"),
                "-extensions",
                "ext",
            ],
        );
        sub.carried = Some(p("ca.pem"));
        sub
    }

    /// Revokes a subordinate CA's certificate.
    pub fn revoke_ca(&self, sub: &CrlCa, reason: &str) {
        run_ok(
            "openssl",
            &[
                "ca",
                "-config",
                &self.cnf,
                "-revoke",
                &sub.cert,
                "-crl_reason",
                reason,
            ],
        );
    }

    fn prepare(base: &Path, name: &str, crl_url: Option<String>) -> CrlCa {
        let dir = base.join(format!("ca-{name}"));
        std::fs::create_dir_all(dir.join("newcerts")).expect("ca dir");
        std::fs::write(dir.join("index.txt"), "").expect("index");
        std::fs::write(dir.join("serial"), "1000\n").expect("serial");
        std::fs::write(dir.join("crlnumber"), "1000\n").expect("crlnumber");
        let cnf = dir.join("ca.cnf");
        std::fs::write(
            &cnf,
            format!(
                "[ca]\ndefault_ca = CA_default\n\n[CA_default]\ndir = {}\n\
                 database = $dir/index.txt\nnew_certs_dir = $dir/newcerts\n\
                 certificate = $dir/ca.pem\nprivate_key = $dir/ca.key\nserial = $dir/serial\n\
                 crlnumber = $dir/crlnumber\ndefault_md = sha256\ndefault_crl_days = 7\n\
                 policy = policy_any\nunique_subject = no\ncopy_extensions = none\n\n\
                 [policy_any]\ncommonName = supplied\n",
                dir.display()
            ),
        )
        .expect("ca.cnf");
        CrlCa {
            cert: dir.join("ca.pem").display().to_string(),
            cnf: cnf.display().to_string(),
            dir,
            crl_url,
            carried: None,
        }
    }

    pub fn issue(&self, address: &str) -> Person {
        let name = address.replace(['@', '.'], "_");
        let p = |suffix: &str| {
            self.dir
                .join(format!("{name}.{suffix}"))
                .display()
                .to_string()
        };
        let mut ext = format!(
            "[ext]\nbasicConstraints=CA:false\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=emailProtection\nsubjectAltName=email:{address}\n"
        );
        if let Some(url) = &self.crl_url {
            ext.push_str(&format!("crlDistributionPoints=URI:{url}\n"));
        }
        std::fs::write(p("ext"), ext).expect("extensions");
        run_ok(
            "openssl",
            &[
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &p("key"),
                "-out",
                &p("csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        run_ok(
            "openssl",
            &[
                "ca",
                "-batch",
                "-config",
                &self.cnf,
                "-in",
                &p("csr"),
                "-out",
                &p("pem"),
                "-days",
                "10",
                "-notext",
                "-extfile",
                &p("ext"),
                "-extensions",
                "ext",
            ],
        );
        Person {
            address: address.to_string(),
            cert: p("pem"),
            key: p("key"),
            carried: self.carried.clone(),
        }
    }

    pub fn revoke(&self, person: &Person, reason: &str) {
        run_ok(
            "openssl",
            &[
                "ca",
                "-config",
                &self.cnf,
                "-revoke",
                &person.cert,
                "-crl_reason",
                reason,
            ],
        );
    }

    /// A CRL from `openssl ca -gencrl` (DER), with `extra` options (dates).
    pub fn crl(&self, extra: &[&str]) -> Vec<u8> {
        let pem = self.dir.join("crl.pem").display().to_string();
        let der = self.dir.join("crl.der").display().to_string();
        let mut args = vec!["ca", "-config", &self.cnf, "-gencrl", "-out", &pem];
        args.extend_from_slice(extra);
        run_ok("openssl", &args);
        run_ok(
            "openssl",
            &["crl", "-in", &pem, "-outform", "DER", "-out", &der],
        );
        std::fs::read(&der).expect("CRL")
    }
}
