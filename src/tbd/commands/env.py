"""`tbd env create NAME --framework REQUIREMENT` and `tbd env list`: environments for runs.

    tbd env create torch211 --framework torch==2.11.0
    tbd env create mxnet --framework mxnet==1.9.1
    tbd run resnet50 --env torch211          # as --python $TBD_HOME/envs/torch211/bin/python

A thin wrapper over `python -m venv` and pip (`tbd.results.envs`); docs/environments.md.
"""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from tbd.commands import EXAMPLES, add_home
from tbd.report.tables import make_console
from tbd.results import envs


def register(sub) -> None:
    p = sub.add_parser("env", help="make and list Python environments that runs can use (--env NAME)", formatter_class=EXAMPLES,
                       description="Make a venv with tbd's light core and one framework requirement (any pip requirement), recorded "
                                   "under NAME so that 'tbd run WORKLOAD --env NAME' runs there; list them.",
                       epilog="examples:\n  tbd env create torch211 --framework torch==2.11.0\n"
                              "  tbd env create mxnet --framework mxnet==1.9.1\n  tbd env list\n"
                              "  tbd run resnet50 --env torch211\ndocs/environments.md")
    actions = p.add_subparsers(dest="env_action", metavar="ACTION")
    create = actions.add_parser("create", help="make an environment", formatter_class=EXAMPLES,
                                description="python -m venv, then pip install tbd's light core (from this checkout, editable) and "
                                            "the requirement, with the pins its framework plugin needs.",
                                epilog="examples:\n  tbd env create torch211 --framework torch==2.11.0\n"
                                       "  tbd env create mxnet --framework mxnet==1.9.1\n"
                                       "  tbd env create samepath --framework torch --inherit   (this torch, another path: fast)")
    create.add_argument("name", help="the environment's name (letters, digits, . _ -)")
    create.add_argument("--framework", action="append", default=[], metavar="REQUIREMENT", required=True,
                        help="a pip requirement, e.g. torch==2.11.0 or mxnet==1.9.1; repeatable")
    create.add_argument("--base-python", metavar="PATH", help="the Python to make the venv from (default: the one running tbd)")
    create.add_argument("--inherit", action="store_true",
                        help="also see the packages of the Python running tbd (behind the environment's own): pip installs only what differs")
    create.add_argument("--system-site-packages", action="store_true", help="passed to python -m venv")
    create.add_argument("--dir", metavar="DIR", help="put the venv here (default: $TBD_HOME/envs/NAME)")
    create.add_argument("--force", action="store_true", help="make it again if it exists")
    add_home(create)
    create.set_defaults(func=run_create)
    listing = actions.add_parser("list", help="list the environments")
    add_home(listing)
    listing.set_defaults(func=run_list)
    p.set_defaults(func=run_list)


def run_create(args) -> int:
    console = make_console()
    record = envs.create(args.name, args.framework, home=args.home, base_python=args.base_python, inherit=args.inherit,
                         system_site_packages=args.system_site_packages, folder=args.dir, force=args.force,
                         say=lambda line: console.print(f"[dim]{escape(line)}[/]"))
    libs = ", ".join(f"{k} {v}" for k, v in record["libraries"].items())
    console.print(f"environment [bold]{escape(record['name'])}[/]: Python {record['python_version']}, {escape(libs)}")
    console.print(f"run there with: tbd run WORKLOAD --env {escape(record['name'])}   (or --python {escape(record['python'])})")
    return 0


def run_list(args) -> int:
    console = make_console()
    found = envs.list_envs(getattr(args, "home", None))
    if not found:
        console.print(f"no environments in {escape(str(envs.envs_dir(getattr(args, 'home', None))))}; "
                      "make one with: tbd env create NAME --framework REQUIREMENT")
        return 0
    table = Table(title="environments", header_style="bold")
    for col in ("name", "python", "libraries", "requirements", "interpreter"):
        table.add_column(col)
    for e in found:
        libs = ", ".join(f"{k} {v}" for k, v in (e.get("libraries") or {}).items())
        where = escape(e.get("python", "?")) + ("" if e["present"] else " [red](missing: tbd env create --force)[/]")
        table.add_row(escape(e["name"]), e.get("python_version", "?"), escape(libs), escape(" ".join(e.get("requirements") or [])), where)
    console.print(table)
    return 0
