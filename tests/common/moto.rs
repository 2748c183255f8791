//! A `moto_server` (the `moto` Python package's S3-compatible server) on a
//! free loopback port, for the object-store tests and the checkpoint
//! bench: started on demand, a bucket created over plain HTTP, killed when
//! dropped.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectStore;

/// A `moto_server` on a free loopback port, killed when dropped.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts one, or says why not (`None`: not installed).
    pub fn start() -> Option<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => panic!("starting moto_server: {e}"),
        };
        let moto = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }

    /// Creates `bucket` with a plain HTTP `PUT` (moto accepts it unsigned).
    pub fn create_bucket(&self, bucket: &str) {
        let addr = self.endpoint.trim_start_matches("http://");
        let mut stream = TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "creating bucket {bucket}: {response}"
        );
    }

    pub fn bucket(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        bucket_at(&self.endpoint, bucket)
    }

    /// The keys of `bucket`'s unfinished multipart uploads (S3's
    /// `ListMultipartUploads`, which `object_store` does not offer), over
    /// plain HTTP.
    pub fn multipart_uploads(&self, bucket: &str) -> Vec<String> {
        let addr = self.endpoint.trim_start_matches("http://");
        let mut stream = TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET /{bucket}?uploads HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "listing the uploads of {bucket}: {response}"
        );
        response
            .split("<Upload>")
            .skip(1)
            .filter_map(|upload| {
                let key = upload.split_once("<Key>")?.1.split_once("</Key>")?.0;
                Some(key.to_owned())
            })
            .collect()
    }
}

/// The bucket `bucket` of the server at `endpoint` (another process's
/// `Moto`).
pub fn bucket_at(endpoint: &str, bucket: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(bucket)
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .build()
            .unwrap(),
    )
}
