//! The offline verbs of the `wxcentral` binary (`sign …`, `crypto …`): the same signature and
//! message-crypto code the server runs, reachable from a shell, so that an operator can check a
//! callback WeChat says it sent, or a `wx.config` a page says failed, without a running server.
//!
//! Keys, tokens and tickets arrive as [`Secret`]s, so the parsed commands can be logged with
//! `{:?}`; errors name what is wrong, never the value.

use std::io::{Read, Write};

use clap::{Subcommand, ValueEnum};
use wechat_proto::Secret;
use wechat_proto::crypto::{CryptoError, EnvelopeFormat, MsgCrypt, fresh_random};
use wechat_proto::signature::{CardSign, jssdk_signature, url_signature};

/// Why an offline verb failed; the binary prints `error: {this}` and exits 1.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("--random must be exactly 16 bytes (got {0})")]
    InvalidRandom(usize),
    #[error("cannot read stdin: {0}")]
    Stdin(std::io::Error),
    #[error("cannot write output: {0}")]
    Output(std::io::Error),
}

/// `wxcentral sign …`: each verb prints the lowercase hex signature alone.
#[derive(Subcommand, Debug)]
pub enum SignCommand {
    /// URL signature, as in WeChat's `signature` query parameter: sha1 of token, timestamp and
    /// nonce sorted and concatenated.
    Url {
        /// Message token configured in the WeChat console.
        #[arg(long)]
        token: Secret,
        #[arg(long)]
        timestamp: String,
        #[arg(long)]
        nonce: String,
    },
    /// JS-SDK `wx.config` signature for a page URL (its `#fragment` is not signed).
    Jssdk {
        /// The account's current jsapi_ticket.
        #[arg(long)]
        ticket: Secret,
        #[arg(long)]
        noncestr: String,
        /// Seconds since the epoch, as passed to `wx.config`.
        #[arg(long)]
        timestamp: u64,
        #[arg(long)]
        url: String,
    },
    /// wx_card signature: sha1 of the non-empty values sorted and concatenated.
    Card {
        /// The wx_card api_ticket (`getticket?type=wx_card`), not the jsapi_ticket.
        #[arg(long)]
        api_ticket: Secret,
        #[arg(long)]
        timestamp: String,
        #[arg(long)]
        nonce_str: String,
        #[arg(long)]
        card_id: Option<String>,
        #[arg(long)]
        code: Option<String>,
        #[arg(long)]
        openid: Option<String>,
    },
}

/// Envelope layout of `crypto encrypt`'s output.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyFormat {
    Xml,
    Json,
}

impl From<ReplyFormat> for EnvelopeFormat {
    fn from(format: ReplyFormat) -> Self {
        match format {
            ReplyFormat::Xml => Self::Xml,
            ReplyFormat::Json => Self::Json,
        }
    }
}

/// `wxcentral crypto …`: WXBizMsgCrypt safe mode.
#[derive(Subcommand, Debug)]
pub enum CryptoCommand {
    /// Verifies and decrypts a safe-mode push. Reads the body (XML or JSON envelope, or the bare
    /// Encrypt value) on stdin and prints the plaintext followed by a newline.
    Decrypt {
        /// Message token configured in the WeChat console.
        #[arg(long)]
        token: Secret,
        /// The 43-character EncodingAESKey.
        #[arg(long)]
        aes_key: Secret,
        /// Receive id: the appid of the account or component.
        #[arg(long)]
        appid: String,
        /// `timestamp` from the push's query string.
        #[arg(long)]
        timestamp: String,
        /// `nonce` from the push's query string.
        #[arg(long)]
        nonce: String,
        /// `msg_signature` from the push's query string (not `signature`).
        #[arg(long)]
        msg_signature: String,
    },
    /// Encrypts and signs a reply. Reads the plaintext on stdin (one trailing newline is dropped,
    /// so that `echo` works) and prints the reply envelope.
    Encrypt {
        /// Message token configured in the WeChat console.
        #[arg(long)]
        token: Secret,
        /// The 43-character EncodingAESKey.
        #[arg(long)]
        aes_key: Secret,
        /// Receive id: the appid of the account or component.
        #[arg(long)]
        appid: String,
        /// Seconds since the epoch; the JSON envelope carries it as a number.
        #[arg(long)]
        timestamp: u64,
        #[arg(long)]
        nonce: String,
        /// The 16-byte random prefix, to reproduce a known ciphertext; fresh when absent.
        #[arg(long)]
        random: Option<String>,
        #[arg(long, value_enum, default_value_t = ReplyFormat::Xml)]
        format: ReplyFormat,
    },
}

/// Runs a `sign` verb, writing the signature and a newline to `out`.
pub fn run_sign(cmd: SignCommand, out: &mut dyn Write) -> Result<(), OfflineError> {
    let signature = match cmd {
        SignCommand::Url { token, timestamp, nonce } => url_signature(token.expose(), &timestamp, &nonce),
        SignCommand::Jssdk { ticket, noncestr, timestamp, url } => {
            jssdk_signature(ticket.expose(), &noncestr, timestamp, &url)
        }
        SignCommand::Card { api_ticket, timestamp, nonce_str, card_id, code, openid } => CardSign {
            api_ticket: api_ticket.expose(),
            timestamp: &timestamp,
            nonce_str: &nonce_str,
            card_id: card_id.as_deref(),
            code: code.as_deref(),
            openid: openid.as_deref(),
        }
        .signature(),
    };
    writeln!(out, "{signature}").map_err(OfflineError::Output)
}

/// Runs a `crypto` verb: the body or plaintext comes from `input`, the result goes to `out`.
pub fn run_crypto(cmd: CryptoCommand, input: &mut dyn Read, out: &mut dyn Write) -> Result<(), OfflineError> {
    let mut body = Vec::new();
    input.read_to_end(&mut body).map_err(OfflineError::Stdin)?;
    match cmd {
        CryptoCommand::Decrypt { token, aes_key, appid, timestamp, nonce, msg_signature } => {
            let crypt = MsgCrypt::new(token.expose(), aes_key.expose(), &appid)?;
            let plaintext = crypt.decrypt_message(&msg_signature, &timestamp, &nonce, &body)?;
            writeln!(out, "{plaintext}").map_err(OfflineError::Output)
        }
        CryptoCommand::Encrypt { token, aes_key, appid, timestamp, nonce, random, format } => {
            // Check the arguments before the key, so that a typo in --random is reported as such.
            let random = match random {
                Some(r) => r.as_bytes().try_into().map_err(|_| OfflineError::InvalidRandom(r.len()))?,
                None => fresh_random(),
            };
            let crypt = MsgCrypt::new(token.expose(), aes_key.expose(), &appid)?;
            let plaintext = strip_one_newline(&body);
            let envelope = crypt.encrypt_reply(plaintext, timestamp, &nonce, format.into(), random);
            writeln!(out, "{envelope}").map_err(OfflineError::Output)
        }
    }
}

fn strip_one_newline(body: &[u8]) -> &[u8] {
    body.strip_suffix(b"\r\n").or_else(|| body.strip_suffix(b"\n")).unwrap_or(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The command tree as `main.rs` wires it, so the tests parse the exact flags of the design.
    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: Top,
    }

    #[derive(Subcommand, Debug)]
    enum Top {
        Sign {
            #[command(subcommand)]
            cmd: SignCommand,
        },
        Crypto {
            #[command(subcommand)]
            cmd: CryptoCommand,
        },
    }

    /// Parses `args` as the binary would and runs it with `stdin`; returns stdout or the error.
    fn run(args: &[&str], stdin: &[u8]) -> Result<String, OfflineError> {
        let cli = Cli::try_parse_from(std::iter::once("wxcentral").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?} does not parse: {e}"));
        let mut out = Vec::new();
        match cli.cmd {
            Top::Sign { cmd } => run_sign(cmd, &mut out)?,
            Top::Crypto { cmd } => run_crypto(cmd, &mut &stdin[..], &mut out)?,
        }
        Ok(String::from_utf8(out).unwrap())
    }

    const MP_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    const MP_ENCRYPT: &str = "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=";
    const MP_PLAINTEXT: &str = "<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>\n<FromUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]></FromUserName>\n<CreateTime>1409735668</CreateTime>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[abcdteT]]></Content>\n<MsgId>6054768590064713728</MsgId>\n</xml>";
    const MP_DECRYPT: &[&str] = &[
        "crypto",
        "decrypt",
        "--token",
        "spamtest",
        "--aes-key",
        MP_KEY,
        "--appid",
        "wx2c2769f8efd9abc2",
        "--timestamp",
        "1409735669",
        "--nonce",
        "1320562132",
        "--msg-signature",
        "5d197aaffba7e9b25a30732f161a50dee96bd5fa",
    ];

    const MINI_ENCRYPT: &str = "+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQqcvZqzDpVzazhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuMcp3Fn2Pede2IuQrKEYwKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04=";
    const MINI_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    fn with(args: &[&str], flag: &str, value: &str) -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let i = v.iter().position(|a| a == flag).unwrap();
        v[i + 1] = value.to_owned();
        v
    }

    fn run_owned(args: &[String], stdin: &[u8]) -> Result<String, OfflineError> {
        run(&args.iter().map(String::as_str).collect::<Vec<_>>(), stdin)
    }

    #[test]
    fn sign_url_prints_the_official_signature() {
        let out = run(
            &["sign", "url", "--token", "AAAAA", "--timestamp", "1714036504", "--nonce", "1514711492"],
            b"",
        )
        .unwrap();
        assert_eq!(out, "f464b24fc39322e44b38aa78f5edd27bd1441696\n");
        let out = run(
            &["sign", "url", "--token", "AAAAA", "--timestamp", "1714037059", "--nonce", "486452656"],
            b"",
        )
        .unwrap();
        assert_eq!(out, "899cf89e464efb63f54ddac96b0a0a235f53aa78\n");
    }

    #[test]
    fn sign_jssdk_prints_the_official_signature() {
        let ticket = "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg";
        for url in ["http://mp.weixin.qq.com?params=value", "http://mp.weixin.qq.com?params=value#top"] {
            let out = run(
                &[
                    "sign",
                    "jssdk",
                    "--ticket",
                    ticket,
                    "--noncestr",
                    "Wm3WZYTPz0wzccnW",
                    "--timestamp",
                    "1414587457",
                    "--url",
                    url,
                ],
                b"",
            )
            .unwrap();
            assert_eq!(out, "0f9de62fce790f9a083d5c99e95740ceb90c27ed\n");
        }
        let bad = Cli::try_parse_from([
            "wxcentral",
            "sign",
            "jssdk",
            "--ticket",
            ticket,
            "--noncestr",
            "n",
            "--timestamp",
            "yesterday",
            "--url",
            "u",
        ]);
        assert!(bad.is_err(), "a non-numeric timestamp must be refused");
    }

    #[test]
    fn sign_card_prints_the_official_signature() {
        let args = [
            "sign",
            "card",
            "--api-ticket",
            "ojZ8YtyVyr30HheH3CM73y7h4jJE",
            "--timestamp",
            "1404896688",
            "--nonce-str",
            "123",
            "--card-id",
            "pjZ8Yt1XGILfi-FUsewpnnolGgZk",
            "--code",
            "1434008071",
        ];
        assert_eq!(run(&args, b"").unwrap(), "f137ab68b7f8112d20ee528ab6074564e2796250\n");
        // --openid is optional and changes the signature when given.
        let mut with_openid = args.to_vec();
        with_openid.extend(["--openid", "o1"]);
        assert_ne!(run(&with_openid, b"").unwrap(), "f137ab68b7f8112d20ee528ab6074564e2796250\n");
    }

    #[test]
    fn decrypt_reads_any_envelope_from_stdin() {
        let xml = format!(
            "<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName><Encrypt><![CDATA[{MP_ENCRYPT}]]></Encrypt></xml>"
        );
        let json = format!(r#"{{"ToUserName":"gh_10f6c3c3ac5a","Encrypt":"{MP_ENCRYPT}"}}"#);
        let bare = format!("{MP_ENCRYPT}\n");
        for body in [xml, json, bare] {
            assert_eq!(run(MP_DECRYPT, body.as_bytes()).unwrap(), format!("{MP_PLAINTEXT}\n"));
        }

        let mini = [
            "crypto",
            "decrypt",
            "--token",
            "AAAAA",
            "--aes-key",
            MINI_KEY,
            "--appid",
            "wxba5fad812f8e6fb9",
            "--timestamp",
            "1714112445",
            "--nonce",
            "415670741",
            "--msg-signature",
            "046e02f8204d34f8ba5fa3b1db94908f3df2e9b3",
        ];
        let body = format!(r#"{{"ToUserName":"gh_97417a04a28d","Encrypt":"{MINI_ENCRYPT}"}}"#);
        assert_eq!(
            run(&mini, body.as_bytes()).unwrap(),
            "{\"ToUserName\":\"gh_97417a04a28d\",\"FromUserName\":\"o9AgO5Kd5ggOC-bXrbNODIiE3bGY\",\"CreateTime\":1714112445,\"MsgType\":\"event\",\"Event\":\"debug_demo\",\"debug_str\":\"hello world\"}\n"
        );
    }

    const REPLY_ARGS: &[&str] = &[
        "crypto",
        "encrypt",
        "--token",
        "AAAAA",
        "--aes-key",
        MINI_KEY,
        "--appid",
        "wxba5fad812f8e6fb9",
        "--timestamp",
        "1713424427",
        "--nonce",
        "415670741",
        "--random",
        "707722b803182950",
    ];
    const REPLY_ENCRYPT: &str =
        "ELGduP2YcVatjqIS+eZbp80MNLoAUWvzzyJxgGzxZO/5sAvd070Bs6qrLARC9nVHm48Y4hyRbtzve1L32tmxSQ==";
    const REPLY_SIG: &str = "1b9339964ed2e271e7c7b6ff2b0ef902fc94dea1";

    #[test]
    fn encrypt_reproduces_the_official_reply() {
        let mut json_args = REPLY_ARGS.to_vec();
        json_args.extend(["--format", "json"]);
        let out = run(&json_args, b"{\"demo_resp\":\"good luck\"}\n").unwrap();
        assert_eq!(
            out,
            format!(
                "{{\"Encrypt\":\"{REPLY_ENCRYPT}\",\"MsgSignature\":\"{REPLY_SIG}\",\"TimeStamp\":1713424427,\"Nonce\":\"415670741\"}}\n"
            )
        );
        // XML is the default format; without the trailing newline stdin gives the same result.
        let out = run(REPLY_ARGS, b"{\"demo_resp\":\"good luck\"}").unwrap();
        assert_eq!(
            out,
            format!(
                "<xml><Encrypt><![CDATA[{REPLY_ENCRYPT}]]></Encrypt><MsgSignature><![CDATA[{REPLY_SIG}]]></MsgSignature><TimeStamp>1713424427</TimeStamp><Nonce><![CDATA[415670741]]></Nonce></xml>\n"
            )
        );
    }

    #[test]
    fn encrypt_then_decrypt_round_trips_through_the_cli() {
        let args: Vec<&str> =
            REPLY_ARGS.iter().copied().filter(|a| *a != "--random" && *a != "707722b803182950").collect();
        let envelope = run(&args, "<xml><Content>你好</Content></xml>\n".as_bytes()).unwrap();
        let again = run(&args, "<xml><Content>你好</Content></xml>\n".as_bytes()).unwrap();
        assert_ne!(envelope, again, "without --random the prefix is fresh each time");
        let env = wechat_proto::crypto::parse_envelope(envelope.as_bytes()).unwrap();
        let decrypt = [
            "crypto",
            "decrypt",
            "--token",
            "AAAAA",
            "--aes-key",
            MINI_KEY,
            "--appid",
            "wxba5fad812f8e6fb9",
            "--timestamp",
            "1713424427",
            "--nonce",
            "415670741",
            "--msg-signature",
            env.msg_signature.as_deref().unwrap(),
        ];
        assert_eq!(run(&decrypt, envelope.as_bytes()).unwrap(), "<xml><Content>你好</Content></xml>\n");
    }

    #[test]
    fn failures_are_errors_that_do_not_echo_secrets() {
        let bad_key = with(MP_DECRYPT, "--aes-key", "tooshortkey");
        let err = run_owned(&bad_key, MP_ENCRYPT.as_bytes()).unwrap_err();
        assert!(matches!(err, OfflineError::Crypto(CryptoError::InvalidAesKey(_))), "{err:?}");
        assert!(!err.to_string().contains("tooshortkey"), "{err}");

        let bad_sig = with(MP_DECRYPT, "--msg-signature", "0000000000000000000000000000000000000000");
        let err = run_owned(&bad_sig, MP_ENCRYPT.as_bytes()).unwrap_err();
        assert!(matches!(err, OfflineError::Crypto(CryptoError::SignatureMismatch)), "{err:?}");

        let wrong_token = with(MP_DECRYPT, "--token", "spamtesT");
        let err = run_owned(&wrong_token, MP_ENCRYPT.as_bytes()).unwrap_err();
        assert!(matches!(err, OfflineError::Crypto(CryptoError::SignatureMismatch)), "{err:?}");
        assert!(!err.to_string().contains("spamtes"), "{err}");

        let wrong_appid = with(MP_DECRYPT, "--appid", "wx2c2769f8efd9abc3");
        let err = run_owned(&wrong_appid, MP_ENCRYPT.as_bytes()).unwrap_err();
        assert!(matches!(err, OfflineError::Crypto(CryptoError::ReceiveIdMismatch)), "{err:?}");

        let wrong_key = with(MP_DECRYPT, "--aes-key", MINI_KEY);
        let err = run_owned(&wrong_key, MP_ENCRYPT.as_bytes()).unwrap_err();
        assert!(matches!(err, OfflineError::Crypto(_)), "{err:?}");
        assert!(!err.to_string().contains("abcdteT"), "{err}");

        let err = run(MP_DECRYPT, b"\x00\x01garbage that is not an envelope").unwrap_err();
        assert!(matches!(err, OfflineError::Crypto(CryptoError::MalformedEnvelope(_))), "{err:?}");
        let err = run(MP_DECRYPT, b"").unwrap_err();
        assert!(matches!(err, OfflineError::Crypto(CryptoError::MissingEncrypt)), "{err:?}");
        let err = run(MP_DECRYPT, b"<xml><Encrypt>unclosed").unwrap_err();
        assert!(matches!(err, OfflineError::Crypto(CryptoError::MalformedEnvelope(_))), "{err:?}");

        let short_random = with(REPLY_ARGS, "--random", "tooshort");
        let err = run_owned(&short_random, b"hi").unwrap_err();
        assert!(matches!(err, OfflineError::InvalidRandom(8)), "{err:?}");
        assert_eq!(err.to_string(), "--random must be exactly 16 bytes (got 8)");
        let bad_key = with(REPLY_ARGS, "--aes-key", "x");
        assert!(matches!(
            run_owned(&bad_key, b"hi"),
            Err(OfflineError::Crypto(CryptoError::InvalidAesKey(_)))
        ));
    }

    #[test]
    fn parsed_commands_redact_secrets_in_debug() {
        let cli =
            Cli::try_parse_from(std::iter::once("wxcentral").chain(MP_DECRYPT.iter().copied())).unwrap();
        let shown = format!("{cli:?}");
        assert!(!shown.contains("spamtest"), "{shown}");
        assert!(!shown.contains(MP_KEY), "{shown}");
        assert!(shown.contains("wx2c2769f8efd9abc2"), "{shown}");
        let cli = Cli::try_parse_from([
            "wxcentral",
            "sign",
            "card",
            "--api-ticket",
            "ojZ8YtyVyr30",
            "--timestamp",
            "1",
            "--nonce-str",
            "n",
        ])
        .unwrap();
        assert!(!format!("{cli:?}").contains("ojZ8YtyVyr30"));
    }

    #[test]
    fn unknown_formats_are_refused_by_the_parser() {
        let mut args = vec!["wxcentral"];
        args.extend(REPLY_ARGS);
        args.extend(["--format", "yaml"]);
        assert!(Cli::try_parse_from(args).is_err());
    }

    #[test]
    fn output_failures_are_reported() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "closed"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let cmd = SignCommand::Url { token: Secret::from("t"), timestamp: "1".into(), nonce: "n".into() };
        assert!(matches!(run_sign(cmd, &mut Closed), Err(OfflineError::Output(_))));
    }
}
