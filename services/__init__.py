"""The services' code; its import name is ``lvsbus_services`` (see lvsbus_services/__init__.py)."""
if __name__ == "services":  # imported by its directory name: a second copy of every module would load
    raise ImportError("import lvsbus_services, not services: the services/ directory is installed and imported "
                      "as lvsbus_services (a checkout: PYTHONPATH=<checkout>; see lvsbus_services/__init__.py)")
