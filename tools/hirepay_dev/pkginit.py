"""Add __init__.py files to the generated protobuf tree so it imports as regular packages."""

import sys
from pathlib import Path


def main(root: str) -> None:
    base = Path(root)
    for directory in [base, *[p for p in base.rglob("*") if p.is_dir()]]:
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated protobuf package."""\n')


if __name__ == "__main__":
    main(sys.argv[1])
