//! Table tests of the address parser.

use super::*;

fn canon(spec: &str) -> Result<Vec<String>, AddressError> {
    parse_addresses(spec).map(|v| v.iter().map(ToString::to_string).collect())
}

/// The variant's name, from the Debug form, so tables can say which error they expect.
fn variant(e: &AddressError) -> String {
    let debug = format!("{e:?}");
    debug
        .split([' ', '{'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn accepted_forms_expand_to_canonical_addresses() {
    let table: &[(&str, &[&str])] = &[
        ("127.0.0.1:8188", &["http://127.0.0.1:8188"]),
        ("gpu-box", &["http://gpu-box:8188"]),
        ("GPU_Box.LAN", &["http://gpu_box.lan:8188"]),
        ("a:8188,b:8189", &["http://a:8188", "http://b:8189"]),
        (" a:1 , b:2 ", &["http://a:1", "http://b:2"]),
        (
            "host:8188-8190",
            &["http://host:8188", "http://host:8189", "http://host:8190"],
        ),
        ("host:7-7", &["http://host:7"]),
        ("host:08188", &["http://host:8188"]),
        ("host:65535", &["http://host:65535"]),
        ("[::1]:8188", &["http://[::1]:8188"]),
        (
            "[::1]:8188-8189",
            &["http://[::1]:8188", "http://[::1]:8189"],
        ),
        ("[::1]", &["http://[::1]:8188"]),
        ("[0:0::1]", &["http://[::1]:8188"]),
        ("[FE80::A]:9", &["http://[fe80::a]:9"]),
        (
            "https://farm.example.com/comfy",
            &["https://farm.example.com:443/comfy"],
        ),
        ("http://host:8080/comfyui/", &["http://host:8080/comfyui"]),
        ("http://host/", &["http://host:80"]),
        ("ws://host", &["http://host:80"]),
        ("wss://host", &["https://host:443"]),
        ("HTTPS://Host:8443//a//b/", &["https://host:8443/a/b"]),
        ("https://[::1]/comfy", &["https://[::1]:443/comfy"]),
        ("http://h:1-2/x", &["http://h:1/x", "http://h:2/x"]),
        ("http://h/a-b_c.d~e%20f:g", &["http://h:80/a-b_c.d~e%20f:g"]),
    ];
    for (input, expected) in table {
        let got = canon(input).unwrap_or_else(|e| panic!("input {input:?}: {e}"));
        assert_eq!(got, *expected, "input {input:?}");
    }
}

#[test]
fn errors_name_the_variant_and_quote_the_offending_part() {
    let table: &[(&str, &str, &str)] = &[
        ("", "Empty", ""),
        ("   ", "Empty", ""),
        ("a:1,,b:2", "EmptyItem", "a:1,,b:2"),
        ("a:1,", "EmptyItem", "a:1,"),
        (",", "EmptyItem", ","),
        (":8188", "EmptyHost", ":8188"),
        ("http://", "EmptyHost", "http://"),
        ("http:///x", "EmptyHost", "http:///x"),
        ("[]:1", "EmptyHost", "[]:1"),
        ("host:0", "ZeroPort", "0"),
        ("host:000", "ZeroPort", "000"),
        ("host:0-5", "ZeroPort", "0-5"),
        ("host:65536", "PortTooLarge", "65536"),
        (
            "host:99999999999999999999",
            "PortTooLarge",
            "99999999999999999999",
        ),
        ("host:1-70000", "PortTooLarge", "1-70000"),
        ("host:abc", "PortNotNumeric", "abc"),
        ("host:", "PortNotNumeric", "host:"),
        ("host:-1", "PortNotNumeric", "-1"),
        ("host:1-", "PortNotNumeric", "1-"),
        ("host:+80", "PortNotNumeric", "+80"),
        ("host:1-2-3", "PortNotNumeric", "1-2-3"),
        ("host:8192-8188", "ReversedRange", "8192-8188"),
        ("host:1000-2024", "RangeTooLarge", "1000-2024"),
        ("ftp://host", "UnknownScheme", "ftp"),
        ("://host", "UnknownScheme", "://host"),
        ("a b:1", "InvalidHost", "a b"),
        ("http://a\tb", "InvalidHost", "a\tb"),
        ("héllo:1", "InvalidHost", "héllo"),
        ("a%b", "InvalidHost", "a%b"),
        ("host:8188/comfy", "PathWithoutScheme", "host:8188/comfy"),
        ("host/", "PathWithoutScheme", "host/"),
        ("user:pw@host:1", "UserInfo", "***@host:1"),
        ("http://u:p@host", "UserInfo", "http://***@host"),
        ("::1", "UnbracketedIpv6", "::1"),
        ("fe80::1:8188", "UnbracketedIpv6", "fe80::1:8188"),
        ("http://::1/x", "UnbracketedIpv6", "http://::1/x"),
        ("[zz]:1", "InvalidIpv6", "zz"),
        ("[127.0.0.1]", "InvalidIpv6", "127.0.0.1"),
        ("[::1", "BadBracket", "[::1"),
        ("[::1]x", "BadBracket", "[::1]x"),
        ("a]:1", "BadBracket", "a]:1"),
        ("http://h/a b", "InvalidPath", "/a b"),
        ("http://h/x?y=1", "InvalidPath", "/x?y=1"),
        ("http://h/x#f", "InvalidPath", "/x#f"),
    ];
    for (input, want, quoted) in table {
        let e = parse_addresses(input).expect_err(input);
        assert_eq!(variant(&e), *want, "input {input:?}: {e}");
        if e == AddressError::Empty {
            continue; // nothing to quote
        }
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("{quoted:?}")),
            "input {input:?}: message {msg:?} does not quote {quoted:?}"
        );
    }
}

#[test]
fn messages_say_what_to_do_and_hide_credentials() {
    let msg = parse_addresses("https://admin:hunter2@farm/x")
        .unwrap_err()
        .to_string();
    assert!(!msg.contains("hunter2") && !msg.contains("admin"), "{msg}");
    assert!(msg.contains("headers"), "{msg}");
    for input in ["x,,http://u:hunter2@h", "a:1,hunter2@h"] {
        let msg = ServerAddress::parse(input).unwrap_err().to_string();
        assert!(msg.contains("***@h") && !msg.contains("hunter2"), "{msg}");
        let msg = parse_addresses(input).unwrap_err().to_string();
        assert!(msg.contains("***@h") && !msg.contains("hunter2"), "{msg}");
    }
    let msg = parse_addresses("::1").unwrap_err().to_string();
    assert!(msg.contains("brackets"), "{msg}");
}

#[test]
fn parse_takes_exactly_one_server() {
    let a = ServerAddress::parse(" [::1]:8188 ").unwrap();
    assert_eq!(
        (a.host(), a.port(), a.tls(), a.base_path()),
        ("::1", 8188, false, "")
    );
    assert!(a.is_ipv6());
    assert_eq!(ServerAddress::parse("h:5-5").unwrap().port(), 5);
    for input in ["h:1-2", "a:1,b:2", "a:1,a:1"] {
        let e = ServerAddress::parse(input).unwrap_err();
        assert_eq!(variant(&e), "NotSingle", "{input}");
        assert!(e.to_string().contains(&format!("{input:?}")));
    }
    assert_eq!(ServerAddress::parse(""), Err(AddressError::Empty));
    let e = "h:0".parse::<ServerAddress>().unwrap_err();
    assert_eq!(variant(&e), "ZeroPort");
}

#[test]
fn urls_and_authority() {
    let a = ServerAddress::parse("https://[::1]:8188/comfy/").unwrap();
    assert_eq!(a.http_url("/prompt"), "https://[::1]:8188/comfy/prompt");
    assert_eq!(a.http_url("prompt"), "https://[::1]:8188/comfy/prompt");
    assert_eq!(
        a.ws_url("/ws?clientId=x"),
        "wss://[::1]:8188/comfy/ws?clientId=x"
    );
    assert_eq!(a.authority(), "[::1]:8188");
    let b = ServerAddress::parse("Box:8188").unwrap();
    assert_eq!(
        b.http_url("/view?filename=a.png"),
        "http://box:8188/view?filename=a.png"
    );
    assert_eq!(b.ws_url("/ws"), "ws://box:8188/ws");
    assert_eq!(b.authority(), "box:8188");
}

#[test]
fn default_port_depends_on_whether_a_scheme_is_written() {
    let port = |s: &str| ServerAddress::parse(s).unwrap().port();
    assert_eq!(port("host"), DEFAULT_PORT);
    assert_eq!(port("[::1]"), DEFAULT_PORT);
    assert_eq!(port("http://host"), 80);
    assert_eq!(port("ws://host"), 80);
    assert_eq!(port("https://host"), 443);
    assert_eq!(port("wss://host/x"), 443);
    assert_eq!(port("https://host:8188"), 8188);
}

#[test]
fn display_parses_back_to_the_same_value() {
    let spec = "a:1, B.example:2-4, [::1], [FE80:0::1]:9, https://farm/comfy/, ws://x, wss://y:1/p/q, http://h/%41";
    for addr in parse_addresses(spec).unwrap() {
        let text = addr.to_string();
        assert_eq!(ServerAddress::parse(&text), Ok(addr.clone()), "{text}");
        assert_eq!(parse_addresses(&text), Ok(vec![addr]), "{text}");
    }
}

#[test]
fn serde_uses_the_canonical_string() {
    let a = ServerAddress::parse("https://Farm/comfy/").unwrap();
    let json = serde_json::to_string(&a).unwrap();
    assert_eq!(json, "\"https://farm:443/comfy\"");
    assert_eq!(serde_json::from_str::<ServerAddress>(&json).unwrap(), a);
    assert!(serde_json::from_str::<ServerAddress>("\"h:0\"").is_err());
}

#[test]
fn duplicates_keep_the_first_occurrence_in_order() {
    let table: &[(&str, &[&str])] = &[
        ("a:1-3, A:2", &["http://a:1", "http://a:2", "http://a:3"]),
        ("b:2, a:1, b:2, a:1", &["http://b:2", "http://a:1"]),
        ("h, http://h:8188, ws://H:8188/", &["http://h:8188"]),
        ("[::1], [0::1]:8188", &["http://[::1]:8188"]),
        ("http://h/x, http://h/x/, http://h//x", &["http://h:80/x"]),
        // Different TLS setting, port or base path: not duplicates.
        (
            "http://h:1, https://h:1, h:2, http://h:1/p",
            &["http://h:1", "https://h:1", "http://h:2", "http://h:1/p"],
        ),
    ];
    for (input, expected) in table {
        let got = canon(input).unwrap_or_else(|e| panic!("input {input:?}: {e}"));
        assert_eq!(got, *expected, "input {input:?}");
    }
}

#[test]
fn address_list_items_may_be_lists_and_share_one_duplicate_set() {
    let got = parse_address_list(&["a:1-2", " b:1 , a:2", "[::1]"]).unwrap();
    let got: Vec<String> = got.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "http://a:1",
            "http://a:2",
            "http://b:1",
            "http://[::1]:8188"
        ]
    );
    let owned = vec![String::from("x")];
    assert_eq!(parse_address_list(&owned).unwrap().len(), 1);
    let none: [&str; 0] = [];
    assert_eq!(parse_address_list(&none), Err(AddressError::Empty));
    let e = parse_address_list(&["a:1", "  "]).unwrap_err();
    assert_eq!(variant(&e), "EmptyItem");
    let e = parse_address_list(&["a:1", "b:0"]).unwrap_err();
    assert_eq!(variant(&e), "ZeroPort");
}

/// Every parser on `input`: Err or Ok, never a panic, and any Ok round-trips.
fn try_all(input: &str) {
    let _ = ServerAddress::parse(input);
    let _ = parse_address_list(&[input, input]);
    for a in parse_addresses(input).unwrap_or_default() {
        assert_eq!(ServerAddress::parse(&a.to_string()), Ok(a), "{input:?}");
    }
}

#[test]
fn odd_input_never_panics() {
    let odd = ":|::|::::|[|]|[]|]:|[:|[::1]:|[::1]:-|[::1]::1|host:-1|host:1-|host:-|host:--\
        |host:99999999999999999999|host:1-99999999999999999999|host:65535-65535|host:1-1024\
        |h:\0|\0|日本:8188|ホスト|http://日本/パス|🦀:🦀|a:٣|a:１２|://|:///|http:/|http://:\
        |http://[|http://[]/|https://@|@|@@|a@|[@]|a,b,,|,,,| , |\t\n|a:1,\u{200b}|HTTP://A:1\
        |h\u{301}:1|[::ffff:1.2.3.4]|[fe80::1%eth0]|%|/|//|h:1/|http://h:1?x|ws://h#|a:b:c\
        |[::1]]:1|[[::1]]|https://h:1-3/a/../b|http://h:0x1F";
    for input in odd.split('|') {
        try_all(input);
    }
    try_all(&format!("{}:1", "x".repeat(5000)));
    // Every string of one to three characters from an alphabet of troublemakers.
    let alphabet = [
        ':', '[', ']', '-', '0', '9', 'a', '/', '@', ',', ' ', 'é', '1',
    ];
    for a in alphabet {
        try_all(&format!("{a}"));
        for b in alphabet {
            try_all(&format!("{a}{b}"));
            for c in alphabet {
                try_all(&format!("{a}{b}{c}"));
            }
        }
    }
}
