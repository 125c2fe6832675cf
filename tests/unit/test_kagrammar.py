"""keepalived.conf's grammar (lvsbus/config/kagrammar.py), as keepalived(5) describes it: comments,
blocks, quoting and escapes, conditional lines, parameters (recursive, multi-line, pre-defined),
~SEQ and ~LST, includes with globs and braces; errors name file and line. And every sample config
keepalived ships (tests/fixtures/keepalived, origin in its README) reads."""
from __future__ import annotations

import glob
from pathlib import Path

import pytest

from lvsbus.config import ConfigError
from lvsbus.config.kagrammar import Statement, parse
from lvsbus.host.configfiles import HostFiles

FIXTURES = Path(__file__).parents[1] / "fixtures" / "keepalived"


def dump(text: str, config_id: str = "lvs1", filename: str = "<t>") -> str:
    tree, _w = parse(text, filename, config_id=config_id)
    return "".join(s.dump() for s in tree)


def errors(text: str, filename: str = "k.conf", **kw) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        parse(text, filename, config_id="lvs1", **kw)
    return [str(i) for i in ei.value.issues]


def test_comments_blocks_and_one_line_blocks():
    text = """! a comment
global_defs {   # another
   notification_email { a@example.com b@example.com }
   router_id R1 ! trailing
}
vrrp_instance VI_1
{
    nopreempt
}
"""
    assert dump(text) == ("global_defs {\n    notification_email {\n        a@example.com b@example.com\n"
                          "    }\n    router_id R1\n}\nvrrp_instance VI_1 {\n    nopreempt\n}\n")
    tree, _ = parse(text, "k.conf", config_id="x")
    assert isinstance(tree[1], Statement) and (tree[1].file, tree[1].line) == ("k.conf", 6)
    assert tree[0].find("router_id")[0].args == ["R1"] and tree[0].find("router_id")[0].line == 4
    assert tree[0].find("notification_email")[0].words() == ["a@example.com", "b@example.com"]


def test_quotes_and_escapes():
    text = r"""notify_master "/bin/notify 'a b' \x41\101\t${_HASH}" x
misc_path 'abcd" efg h "mnop'
one abcd" efg h jkl "mnop
"""
    tree, _ = parse(text, "<t>", config_id="x")
    assert tree[0].args == ["/bin/notify 'a b' AA\t#", "x"]
    assert tree[1].args == ['abcd" efg h "mnop']
    assert tree[2].args == ["abcd efg h jkl mnop"]  # quotes removed, the whitespace inside kept
    assert "#" not in dump('a "b # not a comment" # a comment\n').split("\n")[0][:3]
    assert parse('a "b # c"\n', "<t>", config_id="x")[0][0].args == ["b # c"]


def test_conditional_lines():
    text = """global_defs {
@lvs1 router_id ONE
@lvs2 router_id TWO
@^lvs1 smtp_server 10.0.0.9
}
"""
    assert "router_id ONE" in dump(text, "lvs1") and "TWO" not in dump(text, "lvs1")
    assert "router_id TWO" in dump(text, "lvs2") and "smtp_server 10.0.0.9" in dump(text, "lvs2")
    assert "smtp_server" not in dump(text, "lvs1")


def test_parameters_recursive_at_use_undefined_untouched_and_conditional():
    text = """$BASE=10.2.${SUB}
$SUB=0
a ${BASE}.100/32
$SUB=10
a ${BASE}.100/32
b $UNDEF ${UNDEF} cost$5
@lvs1 $PRIO=240
@lvs2 $PRIO=200
priority $PRIO
$IF_ONE=@lvs1
$IF_ONE only_on_one
c ${_INSTANCE}
"""
    out = dump(text, "lvs1")
    assert "a 10.2.0.100/32\na 10.2.10.100/32\n" in out
    assert "b $UNDEF ${UNDEF} cost$5\n" in out.replace('"', "")
    assert "priority 240" in out and "only_on_one" in out and "c lvs1" in out
    assert "priority 200" in dump(text, "lvs2") and "only_on_one" not in dump(text, "lvs2")
    assert "${_RANDOM} is not supported" in errors("x ${_RANDOM 1 5}\n")[0]
    assert errors("$A=${A}x\nz ${A}\n")[0].startswith("k.conf:2: parameter substitution does not end")


def test_multi_line_parameters_nest():
    text = """$RS= \\
    real_server 192.168.${VS_NUM}.${RS_NUM} 80 { \\
        weight 1 \\
    }
$VS= \\
    virtual_server 10.0.${VS_NUM}.4 80 { \\
        $RS_NUM=1 \\
        $RS \\
        $RS_NUM=2 \\
        $RS \\
    }
$VS_NUM=0
$VS
"""
    assert dump(text) == ("virtual_server 10.0.0.4 80 {\n    real_server 192.168.0.1 80 {\n        weight 1\n    }\n"
                          "    real_server 192.168.0.2 80 {\n        weight 1\n    }\n}\n")


def test_seq_and_lst():
    assert dump("~SEQ(I, 0, 3) ip 10.0.${I}.1\n") == "".join(f"ip 10.0.{i}.1\n" for i in range(4))
    assert dump("~SEQx(S, 0x90, 0x10, 0xc0) ip fe80::${S}:1\n") == "".join(
        f"ip fe80::{h}:1\n" for h in ("90", "a0", "b0", "c0"))
    assert dump("~SEQ(I, 3) x${I}\n") == "x1\nx2\nx3\n"
    assert dump("~SEQ(I, 3, 1) x${I}\n") == "x3\nx2\nx1\n"
    assert dump("~LST({IP, IP1}, {10,1},{20,4}) 192.168.${IP}.${IP1}\n") == "192.168.10.1\n192.168.20.4\n"
    assert dump("~LST(A, 1, 2) ~LST(B, x, y) ${A}${B}\n") == "1x\n1y\n2x\n2y\n"
    assert errors("\n~SEQ(I, 0, -1, 3) x\n")[0].startswith("k.conf:2: ~SEQ(I, 0, -1, 3): the step never reaches the end")
    assert "has no closing ')'" in errors("~SEQ(I, 0 x\n")[0]
    assert "at most" in errors("~SEQ(I, 0, 10000000) x\n")[0]


def test_structure_errors_name_file_and_line():
    assert errors("a {\n  b\n") == ["k.conf:1: the block of 'a' is not closed: a '}' is missing"]
    assert errors("a\n}\n") == ["k.conf:2: '}' closes no block"]
    assert errors('x "open\n') == ["k.conf:1: a \" quote is not closed on this line"]
    assert errors("{\n}\n")[0] == "k.conf:1: '{' opens a block, but no keyword comes before it"


def test_text_alone_refuses_an_include():
    assert errors("include other.conf\n") == [
        "k.conf:1: include other.conf: cannot read it: other.conf: this text is read without files: includes are not followed here"]


def test_includes_relative_globs_braces_loops(tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "b.conf").write_text("b_item 2\n")
    (tmp_path / "conf.d" / "a.conf").write_text("a_item 1\ninclude ../more/{x,y}.conf\n")
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "x.conf").write_text("x_item ${_PWD}\n")
    (tmp_path / "more" / "y.conf").write_text("y_item\n")
    main = tmp_path / "keepalived.conf"
    main.write_text("top {\n  include conf.d/*.conf\n}\ninclude nothing/*.conf\n")
    tree, warns = parse(main.read_text(), str(main), config_id="x", files=HostFiles())
    top = tree[0]
    assert [s.keyword for s in top.block] == ["a_item", "x_item", "y_item", "b_item"]
    assert top.block[1].args == [str(tmp_path / "more")] and top.block[1].file == str(tmp_path / "more" / "x.conf")
    assert [str(w) for w in warns] == [f"{main}:4: include nothing/*.conf: no file matches (nothing included)"]
    (tmp_path / "more" / "y.conf").write_text("include ../keepalived.conf\n")
    errs = errors(main.read_text(), str(main), files=HostFiles())
    assert any("it includes itself" in e and e.startswith(f"{tmp_path / 'more' / 'y.conf'}:1:") for e in errs)


@pytest.mark.parametrize("path", sorted(glob.glob(str(FIXTURES / "keepalived.conf.*"))), ids=lambda p: Path(p).name)
def test_every_sample_keepalived_ships_reads(path):
    tree, warns = parse(Path(path).read_text(), path, config_id="high", files=HostFiles())
    assert tree and not warns
    for st in tree:  # top-level keywords are keepalived's block names
        assert st.keyword.replace("_", "").isalpha() and st.file == path


def test_sample_structure():
    tree, _ = parse((FIXTURES / "keepalived.conf.sample").read_text(), "s", config_id="x")
    vs = [s for s in tree if s.keyword == "virtual_server"][0]
    assert vs.args[:2] == ["10.10.10.2", "1358"]
    assert {s.keyword for s in vs.block} >= {"delay_loop", "lb_algo", "lb_kind", "real_server"}
    inst = [s for s in tree if s.keyword == "vrrp_instance"][0]
    assert inst.find("virtual_ipaddress")[0].block
