#!/usr/bin/env python3
"""Moves every itscale header's code into the arch-tagged namespace (issue #9; see
include/itscale/core/abi.hpp). A developer tool, not run by CI; the odr_namespace_lint test
points here when a header opens `namespace itscale` by hand.

In every include/itscale/**/*.hpp (core/abi.hpp aside):
  namespace itscale {       ->  ITSCALE_BEGIN_NAMESPACE
  inline namespace v0 {
  }  // namespace v0        ->  ITSCALE_END_NAMESPACE
  }  // namespace itscale
the kernels' own `inline namespace ITSCALE_KERNEL_ABI {` ... `}  // namespace ITSCALE_KERNEL_ABI`
go (the outer tag covers them), and a header using the macros gets
`#include "itscale/core/abi.hpp"`. The untagged vocabulary already opens with
ITSCALE_BEGIN_UNTAGGED_NAMESPACE and is left alone. Idempotent.

Usage: python3 .ci/tag_namespaces.py [repository root]   (default: this script's repository)
"""
import pathlib
import re
import sys

ABI_INCLUDE = '#include "itscale/core/abi.hpp"'
OPEN = re.compile(r'^namespace itscale \{[ \t]*\n(?:[ \t]*\n)?inline namespace v0 \{[ \t]*\n', re.M)
CLOSE = re.compile(r'^\}[ \t]*// namespace v0[ \t]*\n(?:[ \t]*\n)?\}[ \t]*// namespace itscale[ \t]*(?:\n|\Z)', re.M)
KERNEL_OPEN = r'inline namespace ITSCALE_(?:KERNEL_ABI|ABI_TAG) \{[ \t]*\n'
KERNEL_CLOSE = r'\}[ \t]*// namespace ITSCALE_(?:KERNEL_ABI|ABI_TAG)[ \t]*\n'


def drop_line(text, line):
    # A line between two blank lines takes one of them along; otherwise just the line.
    text = re.sub(r'\n\n' + line + r'\n', '\n\n', text)
    return re.sub(r'^' + line, '', text, flags=re.M)


def add_abi_include(text):
    if ABI_INCLUDE in text or 'ITSCALE_BEGIN_' not in text:
        return text
    lines = text.split('\n')
    own = [i for i, l in enumerate(lines) if l.startswith('#include "itscale/')]
    if own:  # into the first block of itscale includes, before the first one sorting after it
        end = own[0]
        while end < len(lines) and lines[end].startswith('#include "itscale/'):
            end += 1
        at = next((i for i in range(own[0], end) if lines[i] > ABI_INCLUDE), end)
        lines.insert(at, ABI_INCLUDE)
    else:
        system = [i for i, l in enumerate(lines) if l.startswith('#include <')]
        if system:
            lines[system[-1] + 1:system[-1] + 1] = ['', ABI_INCLUDE]
        else:  # after `#pragma once` and the file comment
            at = lines.index('#pragma once') + 1
            while at < len(lines) and lines[at].startswith('///'):
                at += 1
            lines[at:at] = ['', ABI_INCLUDE]
    return '\n'.join(lines)


def rewrite(text):
    text = OPEN.sub('ITSCALE_BEGIN_NAMESPACE\n', text)
    text = CLOSE.sub('ITSCALE_END_NAMESPACE\n', text)
    text = drop_line(text, KERNEL_OPEN)
    text = drop_line(text, KERNEL_CLOSE)
    return add_abi_include(text)


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parent.parent)
    base = root / 'include' / 'itscale'
    changed = 0
    for path in sorted(base.rglob('*.hpp')):
        if path.relative_to(base).as_posix() == 'core/abi.hpp':
            continue
        old = path.read_text()
        new = rewrite(old)
        if new != old:
            path.write_text(new)
            changed += 1
    print(f'tag_namespaces: {changed} header(s) rewritten under {base}')


if __name__ == '__main__':
    main()
