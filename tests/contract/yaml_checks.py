"""YAML checks for tests/template/contract.rs, run with the contract virtualenv's Python.

    yaml_checks.py parse FILE...                     every document loads with PyYAML (YAML 1.1)
                                                     and ruamel.yaml (YAML 1.2), to the same data
    yaml_checks.py crd SCHEMA API_VERSION KIND FILE...
                                                     every document of that kind validates against
                                                     SCHEMA (JSON Schema); at least one exists

Prints one line per problem and exits 1 if there was any.
"""

import json
import sys

import jsonschema
import ruamel.yaml
import yaml


def parse(files):
    problems = []
    yaml12 = ruamel.yaml.YAML(typ="safe", pure=True)
    for path in files:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            docs11 = list(yaml.safe_load_all(text))
        except yaml.YAMLError as e:
            problems.append(f"{path}: YAML 1.1 (PyYAML): {e}")
            continue
        try:
            docs12 = list(yaml12.load_all(text))
        except ruamel.yaml.YAMLError as e:
            problems.append(f"{path}: YAML 1.2 (ruamel.yaml): {e}")
            continue
        # Same text, same data: no `on`/`yes`/`0755`-style scalar that the versions read apart.
        if json.dumps(docs11, sort_keys=True, default=str) != json.dumps(docs12, sort_keys=True, default=str):
            problems.append(f"{path}: YAML 1.1 and 1.2 read different data")
    return problems


def crd(schema_path, api_version, kind, files):
    with open(schema_path, encoding="utf-8") as f:
        validator = jsonschema.Draft202012Validator(json.load(f))
    problems, seen = [], 0
    for path in files:
        with open(path, encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                if not isinstance(doc, dict) or doc.get("apiVersion") != api_version or doc.get("kind") != kind:
                    continue
                seen += 1
                name = doc.get("metadata", {}).get("name", "?")
                for error in validator.iter_errors(doc):
                    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
                    problems.append(f"{path}: {kind} {name}: {where}: {error.message}")
    if seen == 0:
        problems.append(f"no {api_version} {kind} in {', '.join(files)}")
    return problems


def main(argv):
    if len(argv) >= 2 and argv[0] == "parse":
        problems = parse(argv[1:])
    elif len(argv) >= 5 and argv[0] == "crd":
        problems = crd(argv[1], argv[2], argv[3], argv[4:])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
