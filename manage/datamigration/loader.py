"""Loading data-migration plugins with stevedore.  Failures are fatal."""

from stevedore import extension

from manage.datamigration.base import DataMigration
from manage.exceptions import PluginError


def _fail(manager, entrypoint, exc):
    raise PluginError("data migration plugin %r (%s) cannot be loaded: %s: %s"
                      % (entrypoint.name, entrypoint.value,
                         type(exc).__name__, exc))


def load(namespace, names=()):
    """The plugins of a namespace, or only ``names`` (all must exist)."""
    manager = extension.ExtensionManager(
        namespace, invoke_on_load=True, on_load_failure_callback=_fail)
    plugins = {}
    for ext in manager:
        plugin = ext.obj
        if not isinstance(plugin, DataMigration):
            raise PluginError("data migration plugin %r (%s) is not a "
                              "manage.datamigration.DataMigration"
                              % (ext.name, ext.entry_point.value))
        if plugin.name is None:
            plugin.name = ext.name
        elif plugin.name != ext.name:
            raise PluginError("data migration plugin %r is registered as "
                              "%r; the names must match"
                              % (plugin.name, ext.name))
        if ext.name in plugins:
            first = next(e for e in manager if e.name == ext.name)
            raise PluginError(
                "data migration %r is registered twice in the entry-point "
                "namespace %s (%s and %s); remove one" % (
                    ext.name, namespace, first.entry_point.value,
                    ext.entry_point.value))
        plugins[ext.name] = plugin
    twice = sorted({n for n in names if list(names).count(n) > 1})
    if twice:
        raise PluginError("[migration] data_migrations names %s more than "
                          "once" % ", ".join(twice))
    if names:
        missing = sorted(set(names) - set(plugins))
        if missing:
            raise PluginError(
                "data migration(s) %s named in [migration] data_migrations "
                "are not registered in the entry-point namespace %s"
                % (", ".join(missing), namespace))
        plugins = {n: plugins[n] for n in names}
    return list(plugins.values())


def ordered(plugins, expand_chain):
    """Plugins in the order of the expand revisions they follow, then name."""
    position = {rev: i for i, rev in enumerate(expand_chain)}

    def key(plugin):
        return (position.get(plugin.after_revision, -1), plugin.name)
    for plugin in plugins:
        if plugin.after_revision and plugin.after_revision not in position:
            raise PluginError("data migration %r follows revision %r, which "
                              "is not in the expand branch"
                              % (plugin.name, plugin.after_revision))
    return sorted(plugins, key=key)
