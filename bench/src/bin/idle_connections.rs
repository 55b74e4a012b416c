//! Opens many keep-alive connections to a server, sends one request on each, and holds them
//! open and idle, so `bench/run` can read what they cost the gateway in memory.
//!
//! ```text
//! idle_connections ADDRESS COUNT [PATH] [HOLD_SECONDS]
//! ```
//!
//! Prints `ready OPEN FAILED` on stdout once every connection has had its answer, then holds
//! them until standard input reaches its end or `HOLD_SECONDS` (default 120) pass, whichever
//! comes first, and exits, which closes them. Any answer other than a 2xx counts as failed, as
//! does a connection the server closed after answering, since it is then no longer held.
//!
//! Connections are opened one after another: the point is how much memory idle connections
//! hold, not how fast they can be opened, and one at a time keeps the listen backlog out of it.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

/// Longest wait for one answer; a server that takes longer is not serving.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

struct Args {
    address: SocketAddr,
    count: usize,
    path: String,
    hold: Duration,
}

fn parse_args() -> Result<Args, String> {
    let usage = "usage: idle_connections ADDRESS COUNT [PATH] [HOLD_SECONDS]";
    let mut args = std::env::args().skip(1);
    let address = args
        .next()
        .ok_or(usage)?
        .parse()
        .map_err(|_| format!("ADDRESS must be IP:port; {usage}"))?;
    let count = args
        .next()
        .ok_or(usage)?
        .parse()
        .map_err(|_| format!("COUNT must be a number; {usage}"))?;
    let path = args.next().unwrap_or_else(|| "/".to_owned());
    let hold = match args.next() {
        Some(seconds) => seconds
            .parse()
            .map_err(|_| format!("HOLD_SECONDS must be a number; {usage}"))?,
        None => 120,
    };
    Ok(Args {
        address,
        count,
        path,
        hold: Duration::from_secs(hold),
    })
}

/// Connects, sends one keep-alive GET and reads its whole answer, leaving the connection idle.
fn open(address: SocketAddr, request: &[u8]) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&address, ANSWER_TIMEOUT)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    stream.write_all(request)?;
    read_answer(&mut stream)?;
    Ok(stream)
}

/// Reads one response (head, then a body framed by Content-Length or chunked) and checks that
/// it is a 2xx the server means to keep the connection open after.
fn read_answer(stream: &mut TcpStream) -> io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line.split_whitespace().nth(1).unwrap_or("");
    if !status.starts_with('2') {
        return Err(io::Error::other(format!(
            "answered `{}`",
            status_line.trim_end()
        )));
    }
    let mut content_length = 0usize;
    let mut chunked = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => {
                content_length = value
                    .parse()
                    .map_err(|_| io::Error::other("bad content-length"))?;
            }
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" if value.eq_ignore_ascii_case("close") => {
                return Err(io::Error::other("the server closes the connection"));
            }
            _ => {}
        }
    }
    if chunked {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line)?;
            let size_hex = size_line.trim_end().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| io::Error::other("bad chunk size"))?;
            // The chunk, then its CRLF; the last (empty) chunk is followed by the final CRLF.
            io::copy(&mut (&mut reader).take(size as u64 + 2), &mut io::sink())?;
            if size == 0 {
                break;
            }
        }
    } else {
        io::copy(
            &mut (&mut reader).take(content_length as u64),
            &mut io::sink(),
        )?;
    }
    // A keep-alive server sends nothing more until asked, so nothing may be left buffered.
    if !reader.buffer().is_empty() {
        return Err(io::Error::other("unexpected bytes after the answer"));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: idle-connections\r\n\r\n",
        args.path, args.address
    );
    let mut held = Vec::with_capacity(args.count);
    let mut failed = 0usize;
    let mut first_error = None;
    for _ in 0..args.count {
        match open(args.address, request.as_bytes()) {
            Ok(stream) => held.push(stream),
            Err(error) => {
                failed += 1;
                first_error.get_or_insert(error);
            }
        }
    }
    if let Some(error) = first_error {
        eprintln!("{failed} connections failed; the first: {error}");
    }
    println!("ready {} {failed}", held.len());
    if io::stdout().flush().is_err() {
        return ExitCode::FAILURE;
    }

    // Hold until stdin ends (the caller is done) or the hold time passes (the caller is gone).
    let (done, wait) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
        let _ = done.send(());
    });
    let _ = wait.recv_timeout(args.hold);
    drop(held);
    ExitCode::SUCCESS
}
