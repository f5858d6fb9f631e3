//! A publisher's side of the end-to-end tests: a plain static web server on its own loopback
//! port (the publisher's site, or a CDN that mirrors the tracker's files from the gateway), the
//! demo articles re-served from it with the README's snippet, and that snippet read from the
//! README itself so the documented tag is the one the tests run.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{agent, workspace_root};

/// What a [`StaticServer`] serves: files from a folder (read at each request, so a page may be
/// written after the server started), or fixed answers copied from another server.
#[derive(Debug)]
enum Content {
    Folder(PathBuf),
    Mirror(HashMap<String, Mirrored>),
}

/// One mirrored answer: its body and the headers a pull CDN keeps from the origin server.
#[derive(Debug, Clone)]
struct Mirrored {
    body: Vec<u8>,
    headers: Vec<(String, String)>,
}

/// The response headers a CDN passes on from the origin (everything that matters to a browser
/// loading the file from another origin).
const MIRRORED_HEADERS: [&str; 5] = [
    "content-type",
    "cache-control",
    "access-control-allow-origin",
    "cross-origin-resource-policy",
    "timing-allow-origin",
];

/// A plain HTTP/1.1 static server on a loopback port: GET and HEAD, one request per connection.
/// It adds no header of its own beyond `Content-Type` and `Content-Length` for folder files:
/// what a publisher's ordinary web server does.
#[derive(Debug)]
pub struct StaticServer {
    /// `http://127.0.0.1:PORT`, the server's origin.
    pub url: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StaticServer {
    /// Serves the files under `dir` (`/` is `index.html`).
    pub fn folder(dir: &Path) -> Self {
        Self::start(Content::Folder(dir.to_owned()))
    }

    /// A pull CDN: serves each `local` path with the body and the headers that a GET of `remote`
    /// (a full URL) answered, fetched once now.
    pub fn mirror(files: &[(&str, &str)]) -> Self {
        let mut map = HashMap::new();
        for (local, remote) in files {
            let mut resp = agent()
                .get(*remote)
                .call()
                .unwrap_or_else(|e| panic!("GET {remote}: {e}"));
            assert_eq!(resp.status().as_u16(), 200, "GET {remote}");
            let headers = MIRRORED_HEADERS
                .iter()
                .filter_map(|name| {
                    let value = resp.headers().get(*name)?.to_str().ok()?;
                    Some(((*name).to_owned(), value.to_owned()))
                })
                .collect();
            let body = resp
                .body_mut()
                .with_config()
                .limit(64 * 1024 * 1024)
                .read_to_vec()
                .unwrap_or_else(|e| panic!("GET {remote}: {e}"));
            map.insert((*local).to_owned(), Mirrored { body, headers });
        }
        Self::start(Content::Mirror(map))
    }

    fn start(content: Content) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a static server");
        let addr = listener.local_addr().expect("its address");
        let stop = Arc::new(AtomicBool::new(false));
        let content = Arc::new(content);
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let content = Arc::clone(&content);
                std::thread::spawn(move || {
                    let _ = answer(stream, &content);
                });
            }
        });
        Self {
            url: format!("http://{addr}"),
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// Reads one request head and writes one answer, then closes the connection.
fn answer(stream: TcpStream, content: &Content) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default();
    let path = parts
        .next()
        .unwrap_or("/")
        .split(['?', '#'])
        .next()
        .unwrap_or("/");
    let found = match content {
        Content::Folder(dir) => {
            let rel = path.trim_start_matches('/');
            let rel = if rel.is_empty() || rel.ends_with('/') {
                format!("{rel}index.html")
            } else {
                rel.to_owned()
            };
            (!rel.split('/').any(|seg| seg == ".."))
                .then(|| std::fs::read(dir.join(&rel)).ok())
                .flatten()
                .map(|body| Mirrored {
                    body,
                    headers: vec![("content-type".into(), content_type(&rel).into())],
                })
        }
        Content::Mirror(map) => map.get(path).cloned(),
    };
    let mut out = stream;
    let (status, file) = match (method, found) {
        ("GET" | "HEAD", Some(file)) => ("200 OK", file),
        ("GET" | "HEAD", None) => ("404 Not Found", Mirrored::text("not found")),
        _ => ("405 Method Not Allowed", Mirrored::text("GET only")),
    };
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        file.body.len()
    );
    for (name, value) in &file.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    if method != "HEAD" {
        out.write_all(&file.body)?;
    }
    out.flush()?;
    // Let the client read everything before the socket closes.
    let _ = out.shutdown(std::net::Shutdown::Write);
    let _ = reader.read_to_end(&mut Vec::new());
    Ok(())
}

impl Mirrored {
    fn text(body: &str) -> Self {
        Self {
            body: body.as_bytes().to_vec(),
            headers: vec![("content-type".into(), "text/plain".into())],
        }
    }
}

/// The snippet the README documents under `<!-- snippet: NAME … -->` (the HTML fence that
/// follows the marker), exactly as written there.
pub fn readme_snippet(name: &str) -> String {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    // The marker is `<!-- snippet: NAME (a note) -->`; the space keeps `tag` from matching
    // `tag-from-cdn`.
    let marker = format!("<!-- snippet: {name} ");
    let after = readme
        .split_once(&marker)
        .unwrap_or_else(|| panic!("README.md has no {marker}"))
        .1;
    let fence = after
        .split_once("```html\n")
        .unwrap_or_else(|| panic!("no ```html fence after {marker}"))
        .1;
    fence
        .split_once("```")
        .unwrap_or_else(|| panic!("the fence after {marker} is not closed"))
        .0
        .to_owned()
}

/// The demo site's own tag, which [`publisher_site`] replaces.
const DEMO_SNIPPET_START: &str = "<script>\n(function(w,d,s,u)";

/// Writes the demo site into `dir` as a publisher would host it: every page with `snippet` in
/// place of the demo's own tag, the rest (styles, the publisher's own script) unchanged.
pub fn publisher_site(dir: &Path, snippet: &str) {
    copy_site(&workspace_root().join("examples/site"), dir, snippet);
}

fn copy_site(from: &Path, to: &Path, snippet: &str) {
    std::fs::create_dir_all(to).expect("site folder");
    for entry in std::fs::read_dir(from).expect("examples/site") {
        let entry = entry.expect("a site file");
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_site(&src, &dst, snippet);
        } else if src.extension().is_some_and(|e| e == "html") {
            let page = std::fs::read_to_string(&src).expect("a page");
            let start = page
                .find(DEMO_SNIPPET_START)
                .unwrap_or_else(|| panic!("{} has no tag", src.display()));
            let end = start
                + page[start..].find("</script>\n").expect("the tag's end")
                + "</script>\n".len();
            let page = format!("{}{snippet}{}", &page[..start], &page[end..]);
            std::fs::write(&dst, page).expect("write a page");
        } else {
            std::fs::copy(&src, &dst).expect("copy a file");
        }
    }
}
