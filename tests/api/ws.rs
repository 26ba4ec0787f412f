//! A minimal RFC 6455 WebSocket client for the DevTools connection of
//! `chromium.rs`: text messages out (masked), text/ping/close in.

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// A minimal RFC 6455 client: text messages out (masked), text/ping/close in.
pub(crate) async fn ws_connect(url: &str) -> Result<(WsReader, WsWriter), String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("not a ws:// URL: {url}"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = TcpStream::connect(host)
        .await
        .map_err(|e| format!("connect {host}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let key = base64::engine::general_purpose::STANDARD.encode(nonce());
    let request = format!(
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    // Read the handshake answer byte by byte, so no frame bytes are swallowed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err("handshake answer too long".into());
        }
        let b = stream
            .read_u8()
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        head.push(b);
    }
    let head = String::from_utf8_lossy(&head);
    if !head.starts_with("HTTP/1.1 101") {
        return Err(format!("handshake refused: {head}"));
    }
    let (r, w) = stream.into_split();
    Ok((
        WsReader { r },
        WsWriter {
            w,
            seed: nonce_u32(),
        },
    ))
}

fn nonce() -> [u8; 16] {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("random bytes");
    b
}

fn nonce_u32() -> u32 {
    let b = nonce();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

pub(crate) struct WsWriter {
    w: OwnedWriteHalf,
    seed: u32,
}

impl WsWriter {
    /// One final frame with `opcode` and `payload`, masked as a client must.
    pub(crate) async fn send(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        // xorshift: a fresh mask per frame.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 17;
        self.seed ^= self.seed << 5;
        let mask = self.seed.to_be_bytes();
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        let len = payload.len();
        if len < 126 {
            frame.push(0x80 | len as u8);
        } else if let Ok(short) = u16::try_from(len) {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&short.to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.w.write_all(&frame).await
    }
}

pub(crate) enum Frame {
    Text(String),
    Ping(Vec<u8>),
    Close,
}

pub(crate) struct WsReader {
    r: OwnedReadHalf,
}

impl WsReader {
    /// The next whole message (fragments joined).
    pub(crate) async fn next(&mut self) -> std::io::Result<Frame> {
        let mut message = Vec::new();
        loop {
            let mut h = [0u8; 2];
            self.r.read_exact(&mut h).await?;
            let (fin, opcode, masked) = (h[0] & 0x80 != 0, h[0] & 0x0F, h[1] & 0x80 != 0);
            let len = match h[1] & 0x7F {
                126 => u64::from(self.r.read_u16().await?),
                127 => self.r.read_u64().await?,
                n => u64::from(n),
            };
            let mut mask = [0u8; 4];
            if masked {
                self.r.read_exact(&mut mask).await?;
            }
            let len = usize::try_from(len).map_err(std::io::Error::other)?;
            let mut payload = vec![0u8; len];
            self.r.read_exact(&mut payload).await?;
            if masked {
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= mask[i % 4];
                }
            }
            match opcode {
                0x8 => return Ok(Frame::Close),
                0x9 => return Ok(Frame::Ping(payload)),
                0xA => continue,
                _ => {
                    message.extend_from_slice(&payload);
                    if fin {
                        return Ok(Frame::Text(String::from_utf8_lossy(&message).into_owned()));
                    }
                }
            }
        }
    }
}
