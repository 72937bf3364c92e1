# JupyterHub configuration for Atelier: everything lives in atelier_hub.configure, which
# the Zero to JupyterHub chart's hub.extraConfig calls too. Local overrides go below it.
import atelier_hub

atelier_hub.configure(c)  # noqa: F821 (c is JupyterHub's config object)
