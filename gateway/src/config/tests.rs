use std::net::{Ipv4Addr, Ipv6Addr};

use super::validate::host_problem;
use super::*;

// ---------------------------------------------------------------- helpers

fn dest(name: &str, hosts: &[&str], cidrs: &[&str], ports: &[u16]) -> Destination {
    Destination {
        name: name.to_owned(),
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
        ports: ports.to_vec(),
        action: Action::Redirect,
        tls: None,
        gate: GateKind::L4,
    }
}

fn workload(name: &str, cgroup: Option<&str>, netns: Option<&str>) -> WorkloadConfig {
    WorkloadConfig {
        name: name.to_owned(),
        cgroup: cgroup.map(PathBuf::from),
        netns: netns.map(PathBuf::from),
        labels: BTreeMap::new(),
    }
}

/// `Config::default()` changed by `f`.
fn with(f: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config::default();
    f(&mut config);
    config
}

fn problems(config: &Config) -> Vec<Problem> {
    match config.validate() {
        Err(ConfigError::Invalid(problems)) => {
            assert!(!problems.is_empty(), "Invalid with no problems");
            problems
        }
        Err(other) => panic!("validate returned a non-validation error: {other}"),
        Ok(()) => panic!("expected validation problems, config is valid:\n{config:#?}"),
    }
}

/// Asserts that `config` has exactly one problem, on `field`, whose message
/// contains `fragment`.
#[track_caller]
fn assert_single(config: &Config, field: &str, fragment: &str) {
    let problems = problems(config);
    assert!(
        problems.len() == 1 && problems[0].field == field && problems[0].message.contains(fragment),
        "expected exactly one problem `{field}: ...{fragment}...`, got:\n{problems:#?}"
    );
}

#[track_caller]
fn assert_valid(config: &Config) {
    if let Err(err) = config.validate() {
        panic!("expected a valid config, got: {err}\n{config:#?}");
    }
}

#[track_caller]
fn parse_err(yaml: &str) -> String {
    match Config::from_yaml(yaml) {
        Err(ConfigError::Parse(message)) => message,
        other => panic!("expected a parse error for:\n{yaml}\ngot {other:?}"),
    }
}

// ------------------------------------------------------ embedded default

#[test]
fn embedded_default_parses_and_validates() {
    let config = Config::from_yaml(DEFAULT_YAML).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config, Config::embedded_default());
    assert_valid(&config);
}

#[test]
fn embedded_default_content() {
    let config = Config::embedded_default();
    assert_eq!(config.instance, "default");
    assert_eq!(config.admin.address, "127.0.0.1:15000".parse().unwrap());
    assert_eq!(config.listener.mode, ListenerMode::Host);
    assert_eq!(config.listener.port, 15001);
    assert_eq!(config.intercept.cgroup, PathBuf::from("trigate"));
    assert!(config.intercept.create_cgroup);
    assert_eq!(config.intercept.fail_mode, FailMode::Open);
    assert!(config.dns.hosts.is_empty());
    assert_eq!(
        config.workloads,
        vec![WorkloadConfig {
            labels: [("source".to_owned(), "default-config".to_owned())].into(),
            ..workload("local", Some("trigate"), None)
        }]
    );

    let expected: &[(&str, &[&str])] = &[
        ("openai", &["api.openai.com"]),
        ("anthropic", &["api.anthropic.com"]),
        ("gemini", &["generativelanguage.googleapis.com"]),
        ("mistral", &["api.mistral.ai"]),
        ("cohere", &["api.cohere.com", "api.cohere.ai"]),
        ("groq", &["api.groq.com"]),
        ("deepseek", &["api.deepseek.com"]),
        ("xai", &["api.x.ai"]),
        ("together", &["api.together.xyz"]),
        ("fireworks", &["api.fireworks.ai"]),
        ("openrouter", &["openrouter.ai"]),
        ("perplexity", &["api.perplexity.ai"]),
    ];
    let expected: Vec<Destination> = expected
        .iter()
        .map(|(name, hosts)| dest(name, hosts, &[], &[443]))
        .collect();
    assert_eq!(config.destinations, expected);
}

// --------------------------------------------------------------- defaults

#[test]
fn empty_mapping_gives_defaults() {
    assert_eq!(Config::from_yaml("{}").unwrap(), Config::default());
}

#[test]
fn blank_or_comment_only_file_gives_defaults() {
    for text in ["", "\n\n", "# nothing here\n  # indented\n", "---\n# c\n"] {
        assert_eq!(
            Config::from_yaml(text).unwrap(),
            Config::default(),
            "{text:?}"
        );
    }
}

#[test]
fn default_values_are_the_documented_ones() {
    let c = Config::default();
    assert_eq!(c.instance, "default");
    assert_eq!(
        c.admin.address,
        SocketAddr::from((Ipv4Addr::LOCALHOST, 15000))
    );
    assert_eq!(c.log.level, "info");
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.intercept.cgroup, PathBuf::from("trigate"));
    assert!(c.intercept.create_cgroup);
    assert_eq!(c.intercept.fail_mode, FailMode::Open);
    assert_eq!(c.intercept.heartbeat_interval_ms, 1000);
    assert_eq!(c.intercept.heartbeat_timeout_ms, 5000);
    assert_eq!(c.intercept.mark, 0x7467);
    assert_eq!(c.intercept.bpffs, PathBuf::from("/sys/fs/bpf"));
    assert_eq!(c.listener.mode, ListenerMode::Host);
    assert_eq!(c.listener.port, 15001);
    assert!(c.listener.ipv6);
    assert_eq!(c.proxy.connect_timeout_ms, 5000);
    assert_eq!(c.proxy.idle_timeout_secs, 3600);
    assert!(c.dns.hosts.is_empty());
    assert_eq!(c.dns.min_refresh_secs, 5);
    assert_eq!(c.dns.max_refresh_secs, 300);
    assert_eq!(c.dns.retry_secs, 5);
    assert!(c.destinations.is_empty());
    assert!(c.workloads.is_empty());
    assert_valid(&c);
}

#[test]
fn partial_sections_keep_other_defaults() {
    let c =
        Config::from_yaml("intercept:\n  fail_mode: closed\nlistener:\n  ipv6: false\n").unwrap();
    assert_eq!(
        c,
        with(|c| {
            c.intercept.fail_mode = FailMode::Closed;
            c.listener.ipv6 = false;
        })
    );
}

#[test]
fn destination_and_workload_field_defaults() {
    let c = Config::from_yaml(
        "destinations:\n  - name: a\n    hosts: [a.example]\n    ports: [443]\n\
         workloads:\n  - name: w\n    cgroup: x\n",
    )
    .unwrap();
    assert_eq!(c.destinations[0].action, Action::Redirect);
    assert!(c.destinations[0].cidrs.is_empty());
    assert_eq!(c.workloads[0].netns, None);
    assert!(c.workloads[0].labels.is_empty());
}

// -------------------------------------------------------------- round trip

fn rich_config() -> Config {
    with(|c| {
        c.instance = "node-7".to_owned();
        c.admin.address = "[::1]:0".parse().unwrap();
        c.log = LogConfig {
            level: "info,trigate::gate=debug".to_owned(),
            format: LogFormat::Text,
        };
        c.intercept = InterceptConfig {
            cgroup: PathBuf::from("/sys/fs/cgroup/kubepods.slice"),
            create_cgroup: false,
            fail_mode: FailMode::Closed,
            heartbeat_interval_ms: 200,
            heartbeat_timeout_ms: 401,
            mark: 1,
            bpffs: PathBuf::from("/run/bpf"),
        };
        c.listener = ListenerConfig {
            mode: ListenerMode::InPod,
            port: 15006,
            ipv6: false,
        };
        c.proxy = ProxyConfig {
            connect_timeout_ms: 1,
            idle_timeout_secs: 1,
        };
        c.dns = DnsConfig {
            hosts: [(
                "api.example.com".to_owned(),
                vec![
                    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                    IpAddr::V6(Ipv6Addr::LOCALHOST),
                ],
            )]
            .into(),
            servers: vec!["10.96.0.10:53".parse().unwrap()],
            min_refresh_secs: 1,
            max_refresh_secs: 1,
            retry_secs: 1,
        };
        c.destinations = vec![
            Destination {
                action: Action::Observe,
                ..dest(
                    "svc_a.v1",
                    &["api.example.com"],
                    &["10.0.0.0/8", "2001:db8::1/128"],
                    &[443, 8443],
                )
            },
            Destination {
                action: Action::Deny,
                ..dest("blocked", &[], &["192.0.2.7/32"], &[80])
            },
        ];
        c.workloads = vec![
            WorkloadConfig {
                labels: [("team".to_owned(), "ml".to_owned())].into(),
                ..workload(
                    "pod-a",
                    Some("kubepods.slice/pod-a"),
                    Some("/var/run/netns/a"),
                )
            },
            workload("pod-b", None, Some("/proc/42/ns/net")),
        ];
    })
}

#[test]
fn round_trip_serialize_then_parse_is_equal() {
    for config in [rich_config(), Config::default(), Config::embedded_default()] {
        assert_valid(&config);
        let yaml = serde_yaml_ng::to_string(&config).unwrap();
        let back = Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(back, config, "{yaml}");
    }
}

#[test]
fn enum_as_str_is_the_yaml_spelling() {
    #[track_caller]
    fn check<T: Serialize>(value: T, as_str: &str) {
        let yaml = serde_yaml_ng::to_string(&value).unwrap();
        assert_eq!(yaml.trim(), as_str);
    }
    for v in [LogFormat::Json, LogFormat::Text] {
        check(v, v.as_str());
        assert_eq!(v.to_string(), v.as_str());
    }
    for v in [FailMode::Open, FailMode::Closed] {
        check(v, v.as_str());
    }
    for v in [ListenerMode::Host, ListenerMode::InPod] {
        check(v, v.as_str());
    }
    for v in [Action::Redirect, Action::Deny, Action::Observe] {
        check(v, v.as_str());
    }
    assert_eq!(ListenerMode::InPod.as_str(), "in-pod");
    let c = Config::from_yaml("listener:\n  mode: in-pod\n").unwrap();
    assert_eq!(c.listener.mode, ListenerMode::InPod);
}

// ------------------------------------------------------------------ cidrs

#[test]
fn bare_ip_in_cidrs_is_a_host_prefix() {
    let c = Config::from_yaml(
        "destinations:\n  - name: a\n    ports: [443]\n    \
         cidrs: [10.1.2.3, \"2001:db8::1\", 10.0.0.0/8, \"2001:db8::/32\"]\n",
    )
    .unwrap();
    let cidrs: Vec<String> = c.destinations[0]
        .cidrs
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        cidrs,
        [
            "10.1.2.3/32",
            "2001:db8::1/128",
            "10.0.0.0/8",
            "2001:db8::/32"
        ]
    );
    assert_eq!(c.destinations[0].cidrs[0].prefix_len(), 32);
    assert_eq!(c.destinations[0].cidrs[1].prefix_len(), 128);
}

#[test]
fn bad_cidr_is_named_by_index() {
    let message = parse_err(
        "destinations:\n  - name: a\n    ports: [443]\n    cidrs: [10.0.0.0/8, 10.0.0.0/33]\n",
    );
    assert!(
        message.starts_with("destinations[0].cidrs[1]: \"10.0.0.0/33\" is not an IP network"),
        "{message}"
    );
    let message =
        parse_err("destinations:\n  - name: a\n    ports: [443]\n    cidrs: [api.openai.com]\n");
    assert!(
        message.starts_with("destinations[0].cidrs[0]: "),
        "{message}"
    );
    let message = parse_err("destinations:\n  - name: a\n    ports: [443]\n    cidrs: [[1]]\n");
    assert!(
        message.starts_with("destinations[0].cidrs[0]: "),
        "{message}"
    );
}

#[test]
fn cidr_with_host_bits_is_rejected_with_both_fixes() {
    let c = with(|c| c.destinations = vec![dest("a", &[], &["10.1.2.3/8"], &[443])]);
    assert_single(
        &c,
        "destinations[0].cidrs[0]",
        "10.1.2.3/8 has bits set after the prefix length; write 10.0.0.0/8 for the network or \
         10.1.2.3 for the single address",
    );
}

// ------------------------------------------------------------ parse errors

#[test]
fn unknown_fields_are_rejected_with_their_path() {
    let cases = [
        ("colour: red\n", "colour: unknown field `colour`"),
        (
            "intercept:\n  cgroupp: x\n",
            "intercept.cgroupp: unknown field `cgroupp`",
        ),
        ("admin:\n  port: 1\n", "admin.port: unknown field `port`"),
        (
            "destinations:\n  - name: a\n    hosts: [a.b]\n    ports: [1]\n  - name: b\n    \
             hosts: [a.c]\n    port: 443\n",
            "destinations[1].port: unknown field `port`",
        ),
        (
            "workloads:\n  - name: w\n    netnss: /x\n",
            "workloads[0].netnss: unknown field `netnss`",
        ),
        ("dns:\n  host: {}\n", "dns.host: unknown field `host`"),
    ];
    for (yaml, expected) in cases {
        let message = parse_err(yaml);
        assert!(message.starts_with(expected), "{yaml}\n=> {message}");
    }
}

#[test]
fn bad_enum_values_are_named_with_the_choices() {
    let cases = [
        (
            "destinations:\n  - name: a\n    hosts: [a.b]\n    ports: [443]\n    action: block\n",
            "destinations[0].action: unknown variant `block`, expected one of `redirect`, \
             `deny`, `observe`",
        ),
        (
            "intercept:\n  fail_mode: shut\n",
            "intercept.fail_mode: unknown variant `shut`, expected `open` or `closed`",
        ),
        (
            "listener:\n  mode: in_pod\n",
            "listener.mode: unknown variant `in_pod`, expected `host` or `in-pod`",
        ),
        (
            "log:\n  format: JSON\n",
            "log.format: unknown variant `JSON`, expected `json` or `text`",
        ),
    ];
    for (yaml, expected) in cases {
        let message = parse_err(yaml);
        assert!(message.starts_with(expected), "{yaml}\n=> {message}");
    }
}

#[test]
fn type_errors_and_missing_fields_name_the_path() {
    let cases = [
        ("listener:\n  port: 70000\n", "listener.port: "),
        ("admin:\n  address: localhost\n", "admin.address: "),
        ("intercept:\n  mark: -1\n", "intercept.mark: "),
        (
            "dns:\n  hosts:\n    a.example: [10.0.0.1, nope]\n",
            "dns.hosts.a.example[1]: ",
        ),
        (
            "destinations:\n  - hosts: [a.b]\n    ports: [1]\n",
            "destinations[0]: missing field `name`",
        ),
        (
            "destinations:\n  - name: a\n    hosts: [a.b]\n",
            "destinations[0]: missing field `ports`",
        ),
        (
            "destinations:\n  - name: a\n    ports: [0x10000]\n",
            "destinations[0].ports[0]: ",
        ),
        (
            "workloads:\n  - cgroup: x\n",
            "workloads[0]: missing field `name`",
        ),
        ("workloads: {}\n", "workloads: "),
    ];
    for (yaml, expected) in cases {
        let message = parse_err(yaml);
        assert!(message.starts_with(expected), "{yaml}\n=> {message}");
    }
}

#[test]
fn syntax_errors_carry_a_position() {
    let message = parse_err("instance: a\nadmin: [\n");
    assert!(message.contains("at line"), "{message}");
    let message = parse_err("- 1\n");
    assert!(message.contains("expected struct Config"), "{message}");
}

// ---------------------------------------------------------------- load

#[test]
fn load_reads_a_file() {
    let path =
        std::env::temp_dir().join(format!("trigate-config-test-{}.yaml", std::process::id()));
    std::fs::write(&path, DEFAULT_YAML).unwrap();
    let loaded = Config::load(&path);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(loaded.unwrap(), Config::embedded_default());
}

#[test]
fn load_error_names_the_file() {
    let path = Path::new("/nonexistent/trigate/config.yaml");
    let err = Config::load(path).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("cannot read config file /nonexistent/trigate/config.yaml: "),
        "{err}"
    );
}

// ------------------------------------------------------- validation rules

#[test]
fn instance_name_rules() {
    for bad in ["", "Default", "-a", "a_b", "a.b", "a b", &"a".repeat(33)] {
        assert_single(
            &with(|c| c.instance = bad.to_owned()),
            "instance",
            "not a valid instance name",
        );
    }
    for good in ["a", "0", "node-1", &"a".repeat(32)] {
        assert_valid(&with(|c| c.instance = good.to_owned()));
    }
}

#[test]
fn log_level_rules() {
    assert_single(
        &with(|c| c.log.level = String::new()),
        "log.level",
        "must not be empty",
    );
    assert_single(
        &with(|c| c.log.level = "  ".to_owned()),
        "log.level",
        "must not be empty",
    );
    assert_single(
        &with(|c| c.log.level = "info,trigate=loud".to_owned()),
        "log.level",
        "not a valid tracing filter",
    );
    for good in ["debug", "warn,trigate=trace", "trigate::gate=debug"] {
        assert_valid(&with(|c| c.log.level = good.to_owned()));
    }
}

#[test]
fn intercept_cgroup_rules() {
    let cases = [
        ("", "must not be empty"),
        (".", "is the root cgroup"),
        ("./", "is the root cgroup"),
        ("/", "is the root cgroup"),
        ("//", "is the root cgroup"),
        ("/sys/fs/cgroup", "is the root cgroup"),
        ("/sys/fs/cgroup/", "is the root cgroup"),
        ("/sys/fs/cgroup/unified", "is the root cgroup"),
        ("..", "must not contain '..'"),
        ("../escape", "must not contain '..'"),
        ("a/../b", "must not contain '..'"),
        ("/sys/fs/cgroup/../x", "must not contain '..'"),
    ];
    for (path, fragment) in cases {
        assert_single(
            &with(|c| c.intercept.cgroup = PathBuf::from(path)),
            "intercept.cgroup",
            fragment,
        );
    }
    for good in [
        "trigate",
        "a/b",
        "./trigate",
        "/sys/fs/cgroup/trigate",
        "/trigate",
    ] {
        assert_valid(&with(|c| c.intercept.cgroup = PathBuf::from(good)));
    }
}

#[test]
fn heartbeat_rules() {
    assert_single(
        &with(|c| {
            c.intercept.heartbeat_interval_ms = 49;
            c.intercept.heartbeat_timeout_ms = 1000;
        }),
        "intercept.heartbeat_interval_ms",
        "at least 50",
    );
    assert_valid(&with(|c| {
        c.intercept.heartbeat_interval_ms = 50;
        c.intercept.heartbeat_timeout_ms = 101;
    }));
    assert_single(
        &with(|c| {
            c.intercept.heartbeat_interval_ms = 50;
            c.intercept.heartbeat_timeout_ms = 100;
        }),
        "intercept.heartbeat_timeout_ms",
        "more than twice intercept.heartbeat_interval_ms (50)",
    );
    // No overflow on absurd values.
    assert_single(
        &with(|c| c.intercept.heartbeat_interval_ms = u64::MAX),
        "intercept.heartbeat_timeout_ms",
        "more than twice",
    );
}

#[test]
fn mark_and_bpffs_rules() {
    assert_single(
        &with(|c| c.intercept.mark = 0),
        "intercept.mark",
        "must not be 0",
    );
    assert_valid(&with(|c| c.intercept.mark = 1));
    for bad in ["sys/fs/bpf", "", "./bpf"] {
        assert_single(
            &with(|c| c.intercept.bpffs = PathBuf::from(bad)),
            "intercept.bpffs",
            "must be an absolute path",
        );
    }
}

#[test]
fn listener_port_zero_only_in_host_mode() {
    assert_valid(&with(|c| c.listener.port = 0));
    assert_single(
        &with(|c| {
            c.listener.mode = ListenerMode::InPod;
            c.listener.port = 0;
        }),
        "listener.port",
        "only allowed when listener.mode is host",
    );
    assert_valid(&with(|c| c.admin.address = "127.0.0.1:0".parse().unwrap()));
}

#[test]
fn listener_port_must_not_clash_with_admin() {
    for admin in [
        "127.0.0.1:15001",
        "0.0.0.0:15001",
        "[::1]:15001",
        "[::]:15001",
    ] {
        assert_single(
            &with(|c| c.admin.address = admin.parse().unwrap()),
            "listener.port",
            "also the port of admin.address",
        );
    }
    // Different address, or the IPv6 listener is off, or no fixed port.
    assert_valid(&with(|c| {
        c.admin.address = "10.0.0.5:15001".parse().unwrap()
    }));
    assert_valid(&with(|c| {
        c.admin.address = "[::1]:15001".parse().unwrap();
        c.listener.ipv6 = false;
    }));
    assert_valid(&with(|c| {
        c.admin.address = "127.0.0.1:0".parse().unwrap();
        c.listener.port = 0;
    }));
}

#[test]
fn public_admin_address_needs_its_own_port() {
    let public = |a: &str| with(|c| c.admin.public_address = Some(a.parse().unwrap()));
    assert_valid(&public("0.0.0.0:15090"));
    assert_valid(&public("127.0.0.1:0"));
    for clash in ["127.0.0.1:15000", "0.0.0.0:15000"] {
        assert_single(
            &public(clash),
            "admin.public_address",
            "must differ from admin.address",
        );
    }
    assert_single(
        &public("0.0.0.0:15001"),
        "admin.public_address",
        "also listener.port",
    );
    // A public port equal to the admin port on another address binds fine.
    assert_valid(&with(|c| {
        c.admin.address = "127.0.0.1:15090".parse().unwrap();
        c.admin.public_address = Some("10.0.0.5:15090".parse().unwrap());
    }));
    let yaml = "admin:\n  public_address: 0.0.0.0:15090\n";
    let c: Config = serde_yaml_ng::from_str(yaml).unwrap();
    assert_eq!(
        c.admin.public_address,
        Some("0.0.0.0:15090".parse().unwrap())
    );
}

#[test]
fn proxy_timeouts_must_be_positive() {
    assert_single(
        &with(|c| c.proxy.connect_timeout_ms = 0),
        "proxy.connect_timeout_ms",
        "more than 0",
    );
    assert_single(
        &with(|c| c.proxy.idle_timeout_secs = 0),
        "proxy.idle_timeout_secs",
        "more than 0",
    );
    assert_single(
        &with(|c| {
            c.rate_limits.redis_url = Some("redis://127.0.0.1:6379".into());
            c.rate_limits.redis_ca_file = Some("/etc/redis-ca.pem".into());
        }),
        "rate_limits.redis_ca_file",
        "rediss://",
    );
    assert_single(
        &with(|c| c.http.max_request_body_bytes = 0),
        "http.max_request_body_bytes",
        "more than 0",
    );
}

#[test]
fn dns_timing_rules() {
    assert_single(
        &with(|c| c.dns.retry_secs = 0),
        "dns.retry_secs",
        "more than 0",
    );
    assert_single(
        &with(|c| {
            c.dns.min_refresh_secs = 10;
            c.dns.max_refresh_secs = 9;
        }),
        "dns.max_refresh_secs",
        "at least dns.min_refresh_secs (10)",
    );
    assert_single(
        &with(|c| c.dns.min_refresh_secs = 0),
        "dns.min_refresh_secs",
        "at least 1",
    );
    assert_valid(&with(|c| {
        c.dns.min_refresh_secs = 7;
        c.dns.max_refresh_secs = 7;
    }));
}

#[test]
fn dns_hosts_rules() {
    let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    assert_single(
        &with(|c| {
            c.dns.hosts.insert("api.example.com".to_owned(), vec![]);
        }),
        "dns.hosts[\"api.example.com\"]",
        "at least one address",
    );
    assert_single(
        &with(|c| {
            c.dns.hosts.insert("API.example.com".to_owned(), vec![ip]);
        }),
        "dns.hosts[\"API.example.com\"]",
        "lower case: api.example.com",
    );
    assert_single(
        &with(|c| {
            c.dns
                .hosts
                .insert("https://api.example.com/".to_owned(), vec![ip]);
        }),
        "dns.hosts[\"https://api.example.com/\"]",
        "write api.example.com",
    );
    assert_valid(&with(|c| {
        c.dns.hosts.insert("api.example.com".to_owned(), vec![ip]);
        c.dns.hosts.insert("localhost".to_owned(), vec![ip]);
    }));
}

#[test]
fn destination_name_rules() {
    for bad in ["", "OpenAI", "_x", ".x", "a b", "a/b", &"a".repeat(65)] {
        assert_single(
            &with(|c| c.destinations = vec![dest(bad, &["a.example"], &[], &[443])]),
            "destinations[0].name",
            "not a valid name",
        );
    }
    for good in ["a", "svc_a.v1-2", &"a".repeat(64)] {
        assert_valid(&with(|c| {
            c.destinations = vec![dest(good, &["a.example"], &[], &[443])]
        }));
    }
    assert_single(
        &with(|c| {
            c.destinations = vec![
                dest("a", &["a.example"], &[], &[443]),
                dest("b", &["b.example"], &[], &[443]),
                dest("a", &["c.example"], &[], &[443]),
            ]
        }),
        "destinations[2].name",
        "\"a\" is also the name of destinations[0]",
    );
}

#[test]
fn destination_needs_hosts_or_cidrs() {
    assert_single(
        &with(|c| c.destinations = vec![dest("a", &[], &[], &[443])]),
        "destinations[0]",
        "needs at least one of hosts or cidrs",
    );
    assert_valid(&with(|c| {
        c.destinations = vec![dest("a", &[], &["10.0.0.1/32"], &[443])]
    }));
    assert_valid(&with(|c| {
        c.destinations = vec![dest("a", &["a.example"], &[], &[443])]
    }));
}

#[test]
fn destination_url_in_hosts_gets_the_exact_fix() {
    let c = with(|c| {
        c.destinations = vec![
            dest("a", &["a.example"], &[], &[443]),
            dest("b", &["b.example"], &[], &[443]),
            dest("openai", &["https://api.openai.com"], &[], &[443]),
        ]
    });
    let problems = problems(&c);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(
        problems[0].to_string(),
        "destinations[2].hosts[0]: \"https://api.openai.com\" is not a host name; write \
         api.openai.com"
    );
}

#[test]
fn destination_host_rules() {
    let cases = [
        ("api.openai.com:443", "write api.openai.com"),
        ("https://api.openai.com/v1/chat?x=1", "write api.openai.com"),
        (
            "http://user:pw@api.openai.com:8080/",
            "write api.openai.com",
        ),
        ("api.openai.com.", "write api.openai.com"),
        (
            "API.OpenAI.com",
            "must be written in lower case: api.openai.com",
        ),
        (" api.openai.com", "write api.openai.com"),
        (
            "10.1.2.3",
            "is an IP address, not a host name; put it in cidrs",
        ),
        (
            "2001:db8::1",
            "is an IP address, not a host name; put it in cidrs",
        ),
        (
            "https://[2001:db8::1]:443/",
            "2001:db8::1 is an IP address: put it in cidrs",
        ),
        ("10.1.2.3:443", "10.1.2.3 is an IP address: put it in cidrs"),
        ("*.openai.com", "wildcards are not supported"),
        ("", "is not a host name"),
        ("a..b", "is not a host name"),
        ("-a.example", "is not a host name"),
        ("a-.example", "is not a host name"),
        ("api.exa mple.com", "is not a host name"),
        ("bücher.example", "is not a host name"),
        ("1.2.3", "is not a host name"),
    ];
    for (host, fragment) in cases {
        assert_single(
            &with(|c| c.destinations = vec![dest("a", &[host], &[], &[443])]),
            "destinations[0].hosts[0]",
            fragment,
        );
    }
    let long_label = format!("{}.example", "a".repeat(64));
    let long_name = vec!["a".repeat(63); 4].join(".");
    for host in [long_label, long_name] {
        assert_single(
            &with(|c| c.destinations = vec![dest("a", &[&host], &[], &[443])]),
            "destinations[0].hosts[0]",
            "is not a host name",
        );
    }
    let max_label = format!("{}.example", "a".repeat(63));
    for good in [
        "localhost",
        "a.b",
        "xn--bcher-kva.example",
        "_srv.example",
        "1a.example",
        &max_label,
    ] {
        assert_valid(&with(|c| {
            c.destinations = vec![dest("a", &[good], &[], &[443])]
        }));
    }
}

#[test]
fn destination_duplicate_hosts_and_cidrs() {
    assert_single(
        &with(|c| {
            c.destinations = vec![dest(
                "a",
                &["a.example", "b.example", "a.example"],
                &[],
                &[443],
            )]
        }),
        "destinations[0].hosts[2]",
        "listed twice (also hosts[0])",
    );
    assert_single(
        &with(|c| c.destinations = vec![dest("a", &[], &["10.0.0.0/8", "10.0.0.0/8"], &[443])]),
        "destinations[0].cidrs[1]",
        "listed twice (also cidrs[0])",
    );
}

#[test]
fn destination_overlap_across_destinations() {
    assert_single(
        &with(|c| {
            c.destinations = vec![
                dest("a", &["api.example.com"], &[], &[80, 443]),
                dest(
                    "b",
                    &["other.example", "api.example.com"],
                    &[],
                    &[8443, 443],
                ),
            ]
        }),
        "destinations[1].hosts[1]",
        "api.example.com with port 443 is already in destinations[0] (\"a\")",
    );
    assert_single(
        &with(|c| {
            c.destinations = vec![
                dest("a", &[], &["10.0.0.0/8"], &[443]),
                dest("b", &[], &["10.0.0.0/8"], &[443]),
            ]
        }),
        "destinations[1].cidrs[0]",
        "10.0.0.0/8 with port 443 is already in destinations[0]",
    );
    // Same host on different ports, and nested prefixes, are fine.
    assert_valid(&with(|c| {
        c.destinations = vec![
            dest("a", &["api.example.com"], &["10.0.0.0/8"], &[443]),
            dest("b", &["api.example.com"], &["10.1.0.0/16"], &[80]),
            dest("c", &[], &["10.1.0.0/16"], &[443]),
        ]
    }));
}

#[test]
fn destination_port_rules() {
    assert_single(
        &with(|c| c.destinations = vec![dest("a", &["a.example"], &[], &[])]),
        "destinations[0].ports",
        "at least one port",
    );
    assert_single(
        &with(|c| c.destinations = vec![dest("a", &["a.example"], &[], &[443, 0])]),
        "destinations[0].ports[1]",
        "port 0",
    );
    assert_single(
        &with(|c| c.destinations = vec![dest("a", &["a.example"], &[], &[443, 80, 443])]),
        "destinations[0].ports[2]",
        "443 is listed twice (also ports[0])",
    );
    assert_valid(&with(|c| {
        c.destinations = vec![dest("a", &["a.example"], &[], &[1, 65535])]
    }));
}

#[test]
fn workload_name_rules() {
    assert_single(
        &with(|c| c.workloads = vec![workload("Pod A", Some("a"), None)]),
        "workloads[0].name",
        "not a valid name",
    );
    assert_single(
        &with(|c| {
            c.workloads = vec![
                workload("w", Some("a"), None),
                workload("w", Some("b"), None),
            ]
        }),
        "workloads[1].name",
        "\"w\" is also the name of workloads[0]",
    );
}

#[test]
fn workload_needs_cgroup_or_netns() {
    assert_single(
        &with(|c| c.workloads = vec![workload("w", None, None)]),
        "workloads[0]",
        "needs a cgroup, a netns, or both",
    );
    assert_valid(&with(|c| {
        c.workloads = vec![workload("w", Some("a"), None)]
    }));
    assert_valid(&with(|c| {
        c.workloads = vec![workload("w", None, Some("/var/run/netns/w"))]
    }));
}

#[test]
fn in_pod_mode_requires_netns() {
    let c = with(|c| {
        c.listener.mode = ListenerMode::InPod;
        c.workloads = vec![
            workload("a", Some("a"), Some("/var/run/netns/a")),
            workload("b", Some("b"), None),
            workload("c", None, None),
        ];
    });
    let problems = problems(&c);
    let expected = "required when listener.mode is in-pod (the listener opens inside the pod's \
                    network namespace)";
    assert_eq!(
        problems,
        vec![
            Problem {
                field: "workloads[1].netns".to_owned(),
                message: expected.to_owned()
            },
            Problem {
                field: "workloads[2].netns".to_owned(),
                message: expected.to_owned()
            },
        ]
    );
    assert_valid(&with(|c| {
        c.listener.mode = ListenerMode::InPod;
        c.workloads = vec![workload("a", None, Some("/proc/1/ns/net"))];
    }));
}

#[test]
fn workload_path_rules() {
    for (cgroup, fragment) in [
        ("/", "is the root cgroup"),
        ("", "must not be empty"),
        (".", "is the root cgroup"),
        ("a/../../b", "must not contain '..'"),
    ] {
        assert_single(
            &with(|c| c.workloads = vec![workload("w", Some(cgroup), None)]),
            "workloads[0].cgroup",
            fragment,
        );
    }
    for netns in ["var/run/netns/a", ""] {
        assert_single(
            &with(|c| c.workloads = vec![workload("w", None, Some(netns))]),
            "workloads[0].netns",
            "must be an absolute path",
        );
    }
}

#[test]
fn workloads_must_not_share_a_cgroup_or_netns() {
    assert_single(
        &with(|c| {
            c.workloads = vec![
                workload("a", Some("x/y"), None),
                workload("b", Some("./x/y/"), None),
            ]
        }),
        "workloads[1].cgroup",
        "also the cgroup of workloads[0]",
    );
    assert_single(
        &with(|c| {
            c.workloads = vec![
                workload("a", None, Some("/var/run/netns/n")),
                workload("b", Some("b"), Some("/var/run/netns/n")),
            ]
        }),
        "workloads[1].netns",
        "also the netns of workloads[0]",
    );
}

#[test]
fn workload_label_names_must_not_be_empty() {
    assert_single(
        &with(|c| {
            c.workloads = vec![WorkloadConfig {
                labels: [(String::new(), "x".to_owned())].into(),
                ..workload("w", Some("a"), None)
            }]
        }),
        "workloads[0].labels",
        "label names must not be empty",
    );
}

// ------------------------------------------------- several problems at once

#[test]
fn all_problems_are_reported_together() {
    let yaml = "\
instance: Bad_Name
intercept:
  mark: 0
listener:
  mode: in-pod
  port: 0
destinations:
  - name: openai
    hosts: [\"https://api.openai.com\"]
    ports: [443, 443]
workloads:
  - name: w
    cgroup: w
";
    let err = Config::from_yaml(yaml).unwrap_err();
    let ConfigError::Invalid(problems) = &err else {
        panic!("expected Invalid, got {err:?}");
    };
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "instance",
            "intercept.mark",
            "listener.port",
            "destinations[0].hosts[0]",
            "destinations[0].ports[1]",
            "workloads[0].netns",
        ]
    );
    let text = err.to_string();
    assert!(
        text.starts_with("invalid config:\n  - instance: \"Bad_Name\""),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1 + problems.len(), "{text}");
    assert!(
        text.contains(
            "\n  - destinations[0].hosts[0]: \"https://api.openai.com\" is not a host name; \
             write api.openai.com\n"
        ),
        "{text}"
    );
}

// ------------------------------------------------------------------ schema

const SCHEMA_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config.schema.json");

#[test]
fn checked_in_schema_is_fresh() {
    let generated = Config::json_schema();
    if std::env::var_os("TRIGATE_UPDATE_SCHEMA").is_some_and(|v| v == "1") {
        std::fs::write(SCHEMA_PATH, &generated).unwrap();
        return;
    }
    let checked_in = include_str!("../../config.schema.json");
    assert!(
        checked_in == generated,
        "gateway/config.schema.json is stale; regenerate it with `cargo xtask schema` \
         (or TRIGATE_UPDATE_SCHEMA=1 cargo test -p trigate --lib config::tests::checked_in_schema_is_fresh)"
    );
}

#[test]
fn schema_describes_the_config() {
    let schema: serde_json::Value = serde_json::from_str(&Config::json_schema()).unwrap();
    assert_eq!(schema["title"], "Config");
    assert_eq!(schema["additionalProperties"], false);
    let defs = &schema["definitions"];
    for (def, field) in [
        ("InterceptConfig", "cgroup"),
        ("ListenerConfig", "mode"),
        ("Destination", "cidrs"),
        ("WorkloadConfig", "netns"),
        ("DnsConfig", "hosts"),
    ] {
        assert_eq!(defs[def]["additionalProperties"], false, "{def}");
        let props = &defs[def]["properties"][field];
        assert!(props.is_object(), "{def}.{field} missing from schema");
        let text = props.to_string();
        assert!(
            text.contains("description"),
            "{def}.{field} has no description: {text}"
        );
    }
    let required = &defs["Destination"]["required"];
    assert_eq!(*required, serde_json::json!(["name", "ports"]));
    assert_eq!(
        defs["WorkloadConfig"]["required"],
        serde_json::json!(["name"])
    );
    // The schema accepts bare addresses in cidrs (no `/LEN` pattern).
    assert_eq!(defs["Cidr"]["type"], "string");
    assert!(defs["Cidr"].get("pattern").is_none());
    let modes = defs["ListenerMode"].to_string();
    assert!(modes.contains("\"in-pod\""), "{modes}");
    assert!(Config::json_schema().ends_with("}\n"));
}

// ------------------------------------------------------ host name helper

#[test]
fn host_problem_accepts_plain_names() {
    for name in ["api.openai.com", "a", "a-b.c_d.example"] {
        assert_eq!(host_problem(name), None, "{name}");
    }
}

#[test]
fn a_single_workload_is_checked_with_relative_paths() {
    let w = WorkloadConfig {
        name: "Bad Name".into(),
        cgroup: None,
        netns: Some("relative/ns".into()),
        labels: Default::default(),
    };
    let err = w.validate(ListenerMode::InPod).unwrap_err().to_string();
    assert!(err.contains("  - name: "), "{err}");
    assert!(err.contains("  - netns: "), "{err}");
    let ok = WorkloadConfig {
        name: "pod-a".into(),
        cgroup: None,
        netns: Some("/var/run/netns/a".into()),
        labels: Default::default(),
    };
    assert!(ok.validate(ListenerMode::InPod).is_ok());
    let host = WorkloadConfig {
        netns: None,
        cgroup: None,
        ..ok
    };
    let err = host.validate(ListenerMode::Host).unwrap_err().to_string();
    assert!(err.contains("  - workload: "), "{err}");
}

#[test]
fn dns_servers_must_be_reachable_addresses() {
    let c = Config::from_yaml("dns: { servers: [\"127.0.0.1:5353\"] }").unwrap();
    assert_eq!(c.dns.servers, vec!["127.0.0.1:5353".parse().unwrap()]);
    let err = Config::from_yaml("dns: { servers: [\"0.0.0.0:53\", \"10.0.0.1:0\"] }")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dns.servers[0]") && err.contains("dns.servers[1]"),
        "{err}"
    );
}

#[test]
fn destination_tls_is_parsed_and_checked() {
    let ok = Config::from_yaml(
        "destinations:\n  - name: a\n    hosts: [api.example.com]\n    ports: [443]\n    tls: { mode: terminate, sni_allow: [\"*.example.com\"], sni_deny: [bad.example.com] }\n",
    )
    .unwrap();
    let t = ok.destinations[0].tls.as_ref().unwrap();
    assert_eq!(t.mode, TlsMode::Terminate);
    assert_eq!(t.sni_allow, ["*.example.com"]);
    let err = Config::from_yaml(
        "destinations:\n  - name: a\n    cidrs: [10.0.0.1]\n    ports: [80]\n    tls: { mode: originate, sni_deny: [x.example.com], upstream_name: \"Bad Name\" }\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("destinations[0].tls.sni_deny: has no effect"),
        "{err}"
    );
    assert!(err.contains("destinations[0].tls.upstream_name"), "{err}");
    let err = Config::from_yaml(
        "destinations:\n  - name: a\n    cidrs: [10.0.0.1]\n    ports: [443]\n    tls: { mode: passthrough, sni_allow: [\"https://x.com\"] }\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("destinations[0].tls.sni_allow[0]"), "{err}");
    let err = Config::from_yaml("tls: { mode: x }")
        .unwrap_err()
        .to_string();
    assert!(err.contains("tls"), "{err}");
    let err = Config::from_yaml("tls: { ca_cert: relative.crt, leaf_cache_size: 0 }")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tls.ca_cert") && err.contains("tls.leaf_cache_size"),
        "{err}"
    );
}

#[test]
fn routes_auth_and_limits_are_checked() {
    let ok = Config::from_yaml(
        r#"
destinations:
  - { name: api, cidrs: [10.0.0.1], ports: [80], gate: api }
auth:
  api_keys: [{ name: ci, sha256: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae" }]
  jwt: [{ name: corp, issuer: "https://idp.test", jwks_file: /etc/jwks.json }]
routes:
  - name: r1
    match: { destinations: [api], hosts: ["*.example.com"], path: { prefix: /v1 }, methods: [GET] }
    rewrite_prefix: /v2
    authn: [api-key, "jwt:corp", workload]
    allow: [{ api_keys: [ci], methods: [GET] }]
    limits: [{ name: per-wl, requests: 10, per_secs: 60 }, { name: per-key, key: "header:x-api-key", requests: 5 }]
    request_headers: { set: { x-team: a }, remove: [cookie] }
"#,
    )
    .unwrap();
    assert_eq!(ok.routes[0].limits[0].key, "workload");
    assert_eq!(
        ok.routes[0]
            .matches
            .path
            .as_ref()
            .and_then(|m| m.prefix.as_deref()),
        Some("/v1")
    );
    let err = Config::from_yaml(
        r#"
destinations:
  - { name: api, cidrs: [10.0.0.1], ports: [443], gate: api, tls: { mode: passthrough } }
auth:
  api_keys: [{ name: ci, sha256: "nothex" }]
  jwt: [{ name: corp, issuer: "x" }]
routes:
  - name: r1
    match: { destinations: [nope], path: { regex: "(" } }
    rewrite_prefix: /v2
    authn: ["jwt:other", password]
    limits: [{ name: l, key: "cookie", requests: 0, per_secs: 0 }]
    request_headers: { set: { "bad header": x } }
"#,
    )
    .unwrap_err()
    .to_string();
    for field in [
        "destinations[0].gate",
        "auth.api_keys[0].sha256",
        "auth.jwt[0]: needs exactly one",
        "routes[0].match.destinations[0]",
        "routes[0].match.path.regex",
        "routes[0].rewrite_prefix",
        "routes[0].authn[0]",
        "routes[0].authn[1]",
        "routes[0].limits[0].key",
        "routes[0].limits[0].requests",
        "routes[0].limits[0].per_secs",
        "routes[0].request_headers",
    ] {
        assert!(err.contains(field), "{field} missing in:\n{err}");
    }
}

// ------------------------------------------------------------- the llm gate

const LLM_YAML: &str = "\
destinations:
  - name: openai
    cidrs: [10.9.0.1]
    ports: [80]
    gate: llm
llm:
  report_model: requested
  providers:
    - name: anth
      kind: anthropic
      api_key: { file: /run/keys/anthropic }
    - name: local
      kind: openai-compatible
      url: http://10.0.0.5:8000/v1
  models:
    - name: gpt-4o
      targets:
        - { provider: anth, model: claude-sonnet-4, priority: 0 }
        - { provider: local, weight: 2, priority: 1 }
      max_tokens: 1024
      defaults: { temperature: 0.2 }
    - name: \"llama*\"
      targets: [{ provider: local }]
  access:
    - { workloads: [pod-a], models: [\"gpt-4o\"] }
  limits:
    - { name: tpm, workloads: [pod-a], input_tokens_per_minute: 1000, cost_per_day_usd: 2.5 }
  prices:
    - { model: \"claude-sonnet-4*\", input_per_mtok: 3, output_per_mtok: 15 }
";

#[test]
fn llm_config_parses_with_defaults() {
    let c = Config::from_yaml(LLM_YAML).unwrap();
    assert_eq!(c.destinations[0].gate, GateKind::Llm);
    let llm = &c.llm;
    assert_eq!(llm.report_model, crate::config::ReportModel::Requested);
    assert_eq!(llm.max_attempts, 3);
    assert_eq!(
        llm.providers[0].kind,
        crate::config::ProviderKind::Anthropic
    );
    assert_eq!(llm.providers[0].timeout_ms, 120_000);
    assert_eq!(llm.providers[0].cooldown_ms, 30_000);
    assert!(!llm.providers[0].pass_client_key);
    let t = &llm.models[0].targets;
    assert_eq!((t[0].weight, t[0].priority), (1, 0));
    assert_eq!(
        (t[1].weight, t[1].priority, t[1].model.as_deref()),
        (2, 1, None)
    );
    assert_eq!(llm.limits[0].cost_per_day_usd, Some(2.5));
    assert_eq!(llm.prices[0].cached_input_per_mtok, None);
}

#[test]
fn llm_problems_name_their_fields() {
    let yaml = format!("{LLM_YAML}  max_attempts: 0\n");
    let mut c: Config = serde_yaml_ng::from_str(&yaml).unwrap();
    c.llm.providers[1].url = Some("ftp://x".into());
    c.llm.providers.push(c.llm.providers[0].clone());
    c.llm.providers[2].api_key = Some(crate::config::SecretSource {
        file: None,
        env: None,
    });
    c.llm.providers.push(crate::config::Provider {
        kind: crate::config::ProviderKind::Bedrock,
        name: "aws".into(),
        ..c.llm.providers[1].clone()
    });
    c.llm.providers[3].url = None;
    c.llm.models[0].targets[0].provider = "nobody".into();
    c.llm.models[0].targets[1].weight = 0;
    c.llm.models[1].name = "ll*ama".into();
    c.llm.limits[0].input_tokens_per_minute = Some(0);
    c.llm.limits[0].cost_per_day_usd = Some(-1.0);
    let fields: Vec<String> = problems(&c).into_iter().map(|p| p.field).collect();
    for want in [
        "llm.providers[2].name",
        "llm.providers[1].url",
        "llm.providers[2].api_key",
        "llm.providers[3].url",
        "llm.providers[3].aws",
        "llm.models[0].targets[0].provider",
        "llm.models[0].targets[1].weight",
        "llm.models[1].name",
        "llm.limits[0].input_tokens_per_minute",
        "llm.limits[0].cost_per_day_usd",
        "llm.max_attempts",
    ] {
        assert!(
            fields.iter().any(|f| f == want),
            "{want} missing from {fields:?}"
        );
    }
}

#[test]
fn llm_destination_without_models_is_refused() {
    let c = with(|c| {
        let mut d = dest("openai", &[], &["10.9.0.1/32"], &[80]);
        d.gate = GateKind::Llm;
        c.destinations.push(d);
    });
    assert_single(&c, "llm.models", "no model is configured");
}

#[test]
fn llm_destination_cannot_be_passthrough() {
    let mut c = Config::from_yaml(LLM_YAML).unwrap();
    c.destinations[0].tls = Some(crate::config::DestinationTls {
        mode: crate::config::TlsMode::Passthrough,
        sni_allow: vec![],
        sni_deny: vec![],
        upstream_name: None,
    });
    assert_single(&c, "destinations[0].gate", "terminate");
}

#[test]
fn semantic_embeddings_need_an_openai_speaking_provider() {
    let yaml = format!(
        "{LLM_YAML}  cache:\n    enabled: true\n    semantic:\n      enabled: true\n      \
         embeddings: {{ provider: local, model: text-embedding-3-small, dimensions: 256 }}\n"
    );
    let c = Config::from_yaml(&yaml).unwrap();
    let e = c.llm.cache.semantic.embeddings.as_ref().unwrap();
    assert_eq!((e.dimensions, e.timeout_ms), (Some(256), 1000));

    let mut c: Config = serde_yaml_ng::from_str(&yaml).unwrap();
    let e = c.llm.cache.semantic.embeddings.as_mut().unwrap();
    e.provider = "anth".into();
    e.model = " ".into();
    e.dimensions = Some(0);
    e.timeout_ms = 0;
    let found: Vec<(String, String)> = problems(&c)
        .into_iter()
        .map(|p| (p.field, p.message))
        .collect();
    for (field, fragment) in [
        ("llm.cache.semantic.embeddings.provider", "kind anthropic"),
        ("llm.cache.semantic.embeddings.model", "empty"),
        ("llm.cache.semantic.embeddings.dimensions", "at least 1"),
        ("llm.cache.semantic.embeddings.timeout_ms", "at least 1"),
    ] {
        assert!(
            found
                .iter()
                .any(|(f, m)| f == field && m.contains(fragment)),
            "{field}: {fragment} missing from {found:?}"
        );
    }
    c.llm.cache.semantic.embeddings.as_mut().unwrap().provider = "nobody".into();
    assert!(problems(&c)
        .iter()
        .any(|p| p.field == "llm.cache.semantic.embeddings.provider"
            && p.message.contains("not one of llm.providers")));
}
