"""Every ```toml block of README.md and docs/**/*.md is a TOML file a user can copy: it parses
with tomllib (docs/architecture.md, "Commands in the docs"). A block that shows broken TOML on
purpose starts with `# [invalid: REASON]` and must then fail to parse."""

from __future__ import annotations

import tomllib

import pytest

from tests.docs.doc_commands import DocToml, find_toml_blocks

BLOCKS = find_toml_blocks()


def test_the_docs_have_toml_blocks():
    assert len(BLOCKS) >= 4, "the extraction found too few ```toml blocks: has the docs' layout changed?"


@pytest.mark.parametrize("block", BLOCKS, ids=[b.where for b in BLOCKS])
def test_toml_block_parses(block: DocToml):
    if block.invalid_on_purpose:
        with pytest.raises(tomllib.TOMLDecodeError):
            tomllib.loads(block.text)
        return
    try:
        tomllib.loads(block.text)
    except tomllib.TOMLDecodeError as exc:
        pytest.fail(f"{block.where}: not valid TOML ({exc}); fix the example, or start the block with "
                    f"'# [invalid: REASON]' if it is broken on purpose", pytrace=False)


def test_a_block_marked_invalid_is_checked_the_other_way():
    from tests.docs.doc_commands import ROOT

    broken = DocToml("# [invalid: a key twice]\na = 1\na = 2", ROOT / "README.md", 1)
    assert broken.invalid_on_purpose and not DocToml("a = 1", ROOT / "README.md", 1).invalid_on_purpose
    test_toml_block_parses(broken)
