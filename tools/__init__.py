"""The tools' code; its import name is ``lvsbus_tools`` (see lvsbus_tools/__init__.py)."""
if __name__ == "tools":  # imported by its directory name: a second copy of every module would load
    raise ImportError("import lvsbus_tools, not tools: the tools/ directory is installed and imported "
                      "as lvsbus_tools (a checkout: PYTHONPATH=<checkout>; see lvsbus_tools/__init__.py)")
