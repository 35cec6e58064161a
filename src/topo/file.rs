//! The topology as JSON: the file format of `OXCCL_TOPO_FILE` and `oxccl-topo --file`, the
//! dump of `OXCCL_TOPO_DUMP_FILE`, and the record each rank publishes at init.
//!
//! Owns: converting between [`Topology`] / [`RankInfo`] / [`Mapping`] and JSON, with error
//! messages that name the field (`ranks[3].host`). The format:
//!
//! ```json
//! {
//!   "hosts": [{"name": "node0", "nics": [{"name": "eth0", "gbps": 100, "numa": 0}],
//!              "rdma": [{"name": "mlx5_0", "port": 1, "gbps": 100, "active": true,
//!                        "netdev": "eth0", "numa": 0}]}],
//!   "ranks": [{"host": 0, "numa": 0, "rail": 0}, {"host": "node1"}],
//!   "links": {"intra_gbps": 24, "intra_latency_us": 10, "inter_gbps": 10,
//!             "inter_latency_us": 12}
//! }
//! ```
//!
//! A rank's `host` is an index into `hosts` or a host name (hosts named only by ranks need no
//! entry in `hosts`); `numa` and `rail` may be left out. Instead of `hosts` and `ranks`, a
//! `layout` generates a uniform cluster: `{"hosts": 4, "ranks_per_host": 8, "rails": 8,
//! "numa": 2, "map_by": "node"}` (or `"sizes": [8, 8, 4]` for uneven hosts).

use std::collections::HashMap;

use super::json::{self, Json};
use super::mapping::Mapping;
use super::model::{Host, Links, MapBy, Nic, RankInfo, RankPlace, RdmaDev, Topology};
use super::tree::BinTree;

fn num_or_null(x: Option<u32>) -> Json {
    x.map_or(Json::Null, |v| Json::Num(f64::from(v)))
}

fn str_or_null(x: &Option<String>) -> Json {
    x.as_ref().map_or(Json::Null, |s| Json::Str(s.clone()))
}

fn nic_json(n: &Nic) -> Json {
    Json::obj(vec![
        ("name", Json::Str(n.name.clone())),
        ("gbps", Json::Num(n.gbps)),
        ("numa", num_or_null(n.numa)),
    ])
}

fn rdma_json(d: &RdmaDev) -> Json {
    Json::obj(vec![
        ("name", Json::Str(d.name.clone())),
        ("port", Json::Num(f64::from(d.port))),
        ("gbps", Json::Num(d.gbps)),
        ("active", Json::Bool(d.active)),
        ("netdev", str_or_null(&d.netdev)),
        ("numa", num_or_null(d.numa)),
    ])
}

fn links_json(l: &Links) -> Json {
    Json::obj(vec![
        ("intra_gbps", Json::Num(l.intra_gbps)),
        ("intra_latency_us", Json::Num(l.intra_latency_us)),
        ("inter_gbps", Json::Num(l.inter_gbps)),
        ("inter_latency_us", Json::Num(l.inter_latency_us)),
    ])
}

/// The topology as JSON (the file format).
pub fn topology_json(t: &Topology) -> Json {
    let hosts = t
        .hosts
        .iter()
        .map(|h| {
            Json::obj(vec![
                ("name", Json::Str(h.name.clone())),
                ("nics", Json::Arr(h.nics.iter().map(nic_json).collect())),
                ("rdma", Json::Arr(h.rdma.iter().map(rdma_json).collect())),
            ])
        })
        .collect();
    let ranks = t
        .ranks
        .iter()
        .map(|p| {
            let mut kv = vec![("host", Json::Num(p.host as f64))];
            if let Some(n) = p.numa {
                kv.push(("numa", Json::Num(f64::from(n))));
            }
            if let Some(r) = p.rail {
                kv.push(("rail", Json::Num(f64::from(r))));
            }
            Json::obj(kv)
        })
        .collect();
    Json::obj(vec![
        ("hosts", Json::Arr(hosts)),
        ("ranks", Json::Arr(ranks)),
        ("links", links_json(&t.links)),
    ])
}

fn tree_json(t: &BinTree) -> Json {
    Json::obj(vec![
        ("root", Json::Num(t.root as f64)),
        ("depth", Json::Num(t.depth() as f64)),
        (
            "parent",
            Json::Arr(
                t.parent
                    .iter()
                    .map(|p| p.map_or(Json::Num(-1.0), |x| Json::Num(x as f64)))
                    .collect(),
            ),
        ),
    ])
}

/// The dump of `OXCCL_TOPO_DUMP_FILE`: the topology, then the mapping (ring, host groups in
/// ring order, leader groups, double binary trees over hosts) and how the ring measures up.
pub fn dump_json(t: &Topology, m: &Mapping) -> Json {
    let s = m.ring_stats(t);
    let idx = |v: &[usize]| Json::Arr(v.iter().map(|&x| Json::Num(x as f64)).collect());
    let mapping = Json::obj(vec![
        ("aware", Json::Bool(m.aware)),
        ("ring", idx(&m.ring)),
        (
            "ring_stats",
            Json::obj(vec![
                ("network_crossings", Json::Num(s.crossings as f64)),
                ("min_crossings", Json::Num(s.min_crossings as f64)),
                ("max_host_egress", Json::Num(s.max_egress as f64)),
                ("rail_changes", Json::Num(s.rail_changes as f64)),
                ("numa_changes", Json::Num(s.numa_changes as f64)),
            ]),
        ),
        (
            "host_groups",
            Json::Arr(m.hosts.iter().map(|h| idx(h)).collect()),
        ),
        (
            "leader_groups",
            Json::Arr((0..m.nleaders()).map(|k| idx(&m.leaders(k))).collect()),
        ),
        (
            "host_trees",
            Json::Arr(m.trees.iter().map(tree_json).collect()),
        ),
    ]);
    let Json::Obj(mut kv) = topology_json(t) else {
        return Json::Null;
    };
    kv.push(("mapping".into(), mapping));
    Json::Obj(kv)
}

/// Field access with errors naming the path.
struct At<'a> {
    v: &'a Json,
    path: String,
}

impl<'a> At<'a> {
    fn key(&self, k: &str) -> Option<At<'a>> {
        self.v.get(k).filter(|x| **x != Json::Null).map(|v| At {
            v,
            path: format!("{}.{k}", self.path),
        })
    }

    fn want(&self, what: &str) -> String {
        format!(
            "{}: expected {what}, found {}",
            self.path,
            self.v.type_name()
        )
    }

    fn f64(&self) -> Result<f64, String> {
        self.v.as_f64().ok_or_else(|| self.want("a number"))
    }

    fn u32(&self) -> Result<u32, String> {
        self.v
            .as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| self.want("a non-negative integer"))
    }

    fn usize(&self) -> Result<usize, String> {
        self.v
            .as_u64()
            .and_then(|x| usize::try_from(x).ok())
            .ok_or_else(|| self.want("a non-negative integer"))
    }

    fn string(&self) -> Result<String, String> {
        self.v
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| self.want("a string"))
    }

    fn items(&self) -> Result<Vec<At<'a>>, String> {
        let a = self.v.as_array().ok_or_else(|| self.want("an array"))?;
        Ok(a.iter()
            .enumerate()
            .map(|(i, v)| At {
                v,
                path: format!("{}[{i}]", self.path),
            })
            .collect())
    }

    fn opt<T>(
        &self,
        k: &str,
        f: impl Fn(&At<'a>) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        self.key(k).map(|a| f(&a)).transpose()
    }

    fn req<T>(&self, k: &str, f: impl Fn(&At<'a>) -> Result<T, String>) -> Result<T, String> {
        match self.key(k) {
            Some(a) => f(&a),
            None => Err(format!("{}: missing \"{k}\"", self.path)),
        }
    }
}

fn nic_from(a: &At<'_>) -> Result<Nic, String> {
    Ok(Nic {
        name: a.req("name", At::string)?,
        gbps: a.opt("gbps", At::f64)?.unwrap_or(0.0),
        numa: a.opt("numa", At::u32)?,
    })
}

fn rdma_from(a: &At<'_>) -> Result<RdmaDev, String> {
    Ok(RdmaDev {
        name: a.req("name", At::string)?,
        port: a.opt("port", At::u32)?.unwrap_or(1),
        gbps: a.opt("gbps", At::f64)?.unwrap_or(0.0),
        active: match a.key("active") {
            Some(x) => match x.v {
                Json::Bool(b) => *b,
                _ => return Err(x.want("true or false")),
            },
            None => true,
        },
        netdev: a.opt("netdev", At::string)?,
        numa: a.opt("numa", At::u32)?,
    })
}

fn links_from(a: &At<'_>) -> Result<Links, String> {
    let d = Links::DEFAULT;
    let l = Links {
        intra_gbps: a.opt("intra_gbps", At::f64)?.unwrap_or(d.intra_gbps),
        intra_latency_us: a
            .opt("intra_latency_us", At::f64)?
            .unwrap_or(d.intra_latency_us),
        inter_gbps: a.opt("inter_gbps", At::f64)?.unwrap_or(d.inter_gbps),
        inter_latency_us: a
            .opt("inter_latency_us", At::f64)?
            .unwrap_or(d.inter_latency_us),
    };
    l.validate(&a.path)?;
    Ok(l)
}

fn list<T>(
    a: &At<'_>,
    k: &str,
    f: impl Fn(&At<'_>) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    match a.key(k) {
        Some(x) => x.items()?.iter().map(f).collect(),
        None => Ok(Vec::new()),
    }
}

fn layout_from(a: &At<'_>, links: Links) -> Result<Topology, String> {
    let sizes = match a.key("sizes") {
        Some(s) => s
            .items()?
            .iter()
            .map(At::usize)
            .collect::<Result<Vec<_>, _>>()?,
        None => {
            let hosts = a.req("hosts", At::usize)?;
            let per = a.req("ranks_per_host", At::usize)?;
            vec![per; hosts]
        }
    };
    if sizes.is_empty() || sizes.contains(&0) {
        return Err(format!("{}: every host needs at least one rank", a.path));
    }
    let map_by = match a.opt("map_by", At::string)?.as_deref() {
        None | Some("slot") => MapBy::Slot,
        Some("node") => MapBy::Node,
        Some(o) => return Err(format!("{}.map_by: '{o}' is not slot or node", a.path)),
    };
    let rails = a.opt("rails", At::usize)?.unwrap_or(1);
    let numa = a.opt("numa", At::usize)?.unwrap_or(1);
    Ok(Topology::with_sizes(&sizes, rails, numa, map_by, links))
}

/// A topology from its JSON form (see the module docs).
pub fn topology_from_json(v: &Json) -> Result<Topology, String> {
    let top = At {
        v,
        path: "topology".into(),
    };
    if !matches!(v, Json::Obj(_)) {
        return Err(top.want("an object"));
    }
    let links = match top.key("links") {
        Some(l) => links_from(&l)?,
        None => Links::DEFAULT,
    };
    if let Some(l) = top.key("layout") {
        return layout_from(&l, links);
    }
    let mut hosts: Vec<Host> = Vec::new();
    for h in top
        .key("hosts")
        .map(|h| h.items())
        .transpose()?
        .unwrap_or_default()
    {
        hosts.push(Host {
            name: h.req("name", At::string)?,
            nics: list(&h, "nics", nic_from)?,
            rdma: list(&h, "rdma", rdma_from)?,
        });
    }
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for (i, h) in hosts.iter().enumerate() {
        if by_name.insert(h.name.clone(), i).is_some() {
            return Err(format!(
                "topology.hosts[{i}]: host '{}' is listed twice",
                h.name
            ));
        }
    }
    let mut ranks = Vec::new();
    for r in top.req("ranks", At::items)? {
        let h = r.req("host", |h| Ok(h.v.clone()))?;
        let host = match &h {
            Json::Str(name) => match by_name.get(name) {
                Some(&i) => i,
                None => {
                    hosts.push(Host {
                        name: name.clone(),
                        ..Host::default()
                    });
                    by_name.insert(name.clone(), hosts.len() - 1);
                    hosts.len() - 1
                }
            },
            _ => {
                let i = r
                    .req("host", At::usize)
                    .map_err(|_| format!("{}.host: expected a host index or name", r.path))?;
                if i >= hosts.len() {
                    return Err(format!(
                        "{}.host: host {i} is not in \"hosts\" ({} listed)",
                        r.path,
                        hosts.len()
                    ));
                }
                i
            }
        };
        ranks.push(RankPlace {
            host,
            numa: r.opt("numa", At::u32)?,
            rail: r.opt("rail", At::u32)?,
        });
    }
    let t = Topology {
        hosts,
        ranks,
        links,
    };
    t.validate().map_err(|e| format!("topology: {e}"))?;
    Ok(t)
}

/// Reads a topology file; errors name the file.
pub fn load(path: &std::path::Path) -> Result<Topology, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
    json::parse(&text)
        .and_then(|v| topology_from_json(&v))
        .map_err(|e| format!("'{}': {e}", path.display()))
}

/// A rank's published record, kept small because every rank reads every rank's: host,
/// NUMA node, rail, its interface with that interface's speed, and injected links. The
/// host's full list of interfaces and RDMA ports travels once per host instead
/// ([`host_details_bytes`]).
pub fn rank_info_bytes(i: &RankInfo) -> Vec<u8> {
    let gbps = i
        .nic
        .as_ref()
        .and_then(|n| i.nics.iter().find(|x| &x.name == n))
        .map_or(Json::Null, |x| Json::Num(x.gbps));
    Json::obj(vec![
        ("host", Json::Str(i.host.clone())),
        ("numa", num_or_null(i.numa)),
        ("rail", num_or_null(i.rail)),
        ("nic", str_or_null(&i.nic)),
        ("gbps", gbps),
        ("links", i.links.as_ref().map_or(Json::Null, links_json)),
    ])
    .to_text()
    .into_bytes()
}

/// Parses a record made by [`rank_info_bytes`]; the rank's own interface is the only one
/// listed in `nics`.
pub fn rank_info_from_bytes(b: &[u8]) -> Result<RankInfo, String> {
    let text = std::str::from_utf8(b).map_err(|_| "the record is not UTF-8".to_string())?;
    let v = json::parse(text)?;
    let a = At {
        v: &v,
        path: "record".into(),
    };
    let nic = a.opt("nic", At::string)?;
    let gbps = a.opt("gbps", At::f64)?;
    Ok(RankInfo {
        host: a.req("host", At::string)?,
        numa: a.opt("numa", At::u32)?,
        rail: a.opt("rail", At::u32)?,
        nics: nic
            .iter()
            .map(|n| Nic {
                name: n.clone(),
                gbps: gbps.unwrap_or(0.0),
                numa: None,
            })
            .collect(),
        nic,
        rdma: Vec::new(),
        links: a.key("links").map(|l| links_from(&l)).transpose()?,
    })
}

/// A host's interfaces and RDMA ports, published once per host.
pub fn host_details_bytes(i: &RankInfo) -> Vec<u8> {
    Json::obj(vec![
        ("nics", Json::Arr(i.nics.iter().map(nic_json).collect())),
        ("rdma", Json::Arr(i.rdma.iter().map(rdma_json).collect())),
    ])
    .to_text()
    .into_bytes()
}

/// Parses [`host_details_bytes`] into `host`.
pub fn host_details_from_bytes(b: &[u8], host: &mut Host) -> Result<(), String> {
    let text = std::str::from_utf8(b).map_err(|_| "not UTF-8".to_string())?;
    let v = json::parse(text)?;
    let a = At {
        v: &v,
        path: format!("host '{}'", host.name),
    };
    host.nics = list(&a, "nics", nic_from)?;
    host.rdma = list(&a, "rdma", rdma_from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Topology, String> {
        topology_from_json(&json::parse(text).unwrap())
    }

    #[test]
    fn topologies_round_trip() {
        let mut t = Topology::uniform(3, 4, 2, 2, MapBy::Node, Links::DEFAULT);
        t.hosts[1].rdma.push(RdmaDev {
            name: "mlx5_0".into(),
            port: 1,
            gbps: 200.0,
            active: true,
            netdev: Some("eth0".into()),
            numa: None,
        });
        t.ranks[2].numa = None;
        let back = topology_from_json(&topology_json(&t)).unwrap();
        assert_eq!(back, t);
        let m = Mapping::new(&t, true);
        let d = dump_json(&t, &m);
        let again = topology_from_json(&json::parse(&d.to_text()).unwrap()).unwrap();
        assert_eq!(again, t, "a dump can be injected back");
        assert!(d.to_text().contains("\"network_crossings\": 3"));
    }

    #[test]
    fn hosts_by_name_and_layouts() {
        let t = parse(r#"{"ranks": [{"host": "b"}, {"host": "a", "rail": 1}, {"host": "b"}]}"#)
            .unwrap();
        assert_eq!(t.hosts.len(), 2);
        assert_eq!(t.ranks[2].host, 0);
        assert_eq!(t.ranks[1].rail, Some(1));
        let l =
            parse(r#"{"layout": {"sizes": [2, 1], "map_by": "node"}, "links": {"inter_gbps": 1}}"#)
                .unwrap();
        assert_eq!(l.ranks_by_host(), vec![vec![0, 2], vec![1]]);
        assert_eq!(l.links.inter_gbps, 1.0);
        assert_eq!(l.links.intra_gbps, Links::DEFAULT.intra_gbps);
    }

    #[test]
    fn errors_name_the_field() {
        for (text, want) in [
            (r#"[1]"#, "topology: expected an object"),
            (r#"{"hosts": []}"#, "missing \"ranks\""),
            (
                r#"{"ranks": [{"host": 2}]}"#,
                "ranks[0].host: host 2 is not in",
            ),
            (
                r#"{"ranks": [{"host": true}]}"#,
                "expected a host index or name",
            ),
            (
                r#"{"ranks": [{"host": "a", "numa": -1}]}"#,
                "ranks[0].numa: expected a non-negative",
            ),
            (
                r#"{"ranks": [{"host": "a"}], "links": {"inter_gbps": 0}}"#,
                "inter_gbps = 0",
            ),
            (r#"{"layout": {"hosts": 2}}"#, "missing \"ranks_per_host\""),
            (r#"{"layout": {"sizes": [1, 0]}}"#, "at least one rank"),
            (
                r#"{"layout": {"sizes": [1], "map_by": "x"}}"#,
                "not slot or node",
            ),
            (
                r#"{"hosts": [{"name": "a"}, {"name": "a"}], "ranks": []}"#,
                "listed twice",
            ),
            (r#"{"hosts": [{"name": "a"}], "ranks": []}"#, "has no rank"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        let e = load(std::path::Path::new("/nonexistent/topo.json")).unwrap_err();
        assert!(e.contains("/nonexistent/topo.json"), "{e}");
    }

    #[test]
    fn records_and_host_details_round_trip() {
        let eth = |name: &str, numa| Nic {
            name: name.into(),
            gbps: 25.0,
            numa,
        };
        let i = RankInfo {
            host: "h:1".into(),
            numa: Some(1),
            rail: Some(1),
            nic: Some("eth1".into()),
            nics: vec![eth("eth0", Some(0)), eth("eth1", Some(1))],
            rdma: vec![RdmaDev {
                name: "mlx5_1".into(),
                port: 1,
                gbps: 100.0,
                active: false,
                netdev: None,
                numa: Some(1),
            }],
            links: Some(Links::DEFAULT),
        };
        let back = rank_info_from_bytes(&rank_info_bytes(&i)).unwrap();
        assert_eq!(
            back.nics,
            vec![eth("eth1", None)],
            "only the rank's own interface"
        );
        assert_eq!(
            (back.numa, back.rail, back.links),
            (i.numa, i.rail, i.links)
        );
        assert!(back.rdma.is_empty());
        let mut h = Host {
            name: "h:1".into(),
            ..Host::default()
        };
        host_details_from_bytes(&host_details_bytes(&i), &mut h).unwrap();
        assert_eq!((h.nics, h.rdma), (i.nics.clone(), i.rdma.clone()));
        assert!(rank_info_from_bytes(b"{}").unwrap_err().contains("host"));
        assert!(rank_info_from_bytes(&[0xff]).is_err());
        assert!(host_details_from_bytes(b"{\"nics\": 1}", &mut Host::default()).is_err());
    }
}
