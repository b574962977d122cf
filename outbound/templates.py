"""The wording of the mails the gateway sends: jinja2 templates, ours or an admin's,
one set per language (the built-in texts are in ``outbound/texts.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import jinja2

from outbound.texts import BUILTIN
from routing.config import GatewayConfig

__all__ = ["DEFAULT_TEMPLATES", "FALLBACK_LANGUAGE", "Templates"]

FALLBACK_LANGUAGE = "en"  # every template exists in English; agents' mail is English only

# Never a tenant slug nor a folder name an admin would make: the built-in texts cannot be
# shadowed by accident, only by an override found earlier in the search order.
_BUILTIN_PREFIX = "@builtin"

# A resolved template and its globals as a plain dict.
_Resolved = tuple[jinja2.Template, dict[str, object]]


class Templates:
    """jinja2 templates, looked up in this order for ``render(slug, name, lang=L)``:

    1. the tenant's own folder (``templates`` in its table): ``L/name``, then ``name``;
    2. ``[outbound] templates``: ``slug/L/name``, ``slug/name``, ``L/name``, ``name``;
    3. ours: ``L/name``, then English.

    A file directly in a folder speaks for every language; one in a language folder only
    for that language, and wins over it. Admins override wording per tenant and per
    language without touching code; a missing variable is an error at render time
    (StrictUndefined), never a blank.
    """

    def __init__(
        self, folder: Path | None = None, tenant_folders: Mapping[str, Path] | None = None
    ) -> None:
        loaders: list[jinja2.BaseLoader] = []
        if tenant_folders:
            loaders.append(
                jinja2.PrefixLoader(
                    {slug: jinja2.FileSystemLoader(str(f)) for slug, f in tenant_folders.items()}
                )
            )
        if folder is not None:
            loaders.append(jinja2.FileSystemLoader(str(folder)))
        loaders.append(jinja2.PrefixLoader({_BUILTIN_PREFIX: jinja2.DictLoader(BUILTIN)}))
        self._resolved: dict[tuple[str, str, str], _Resolved] = {}
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=False,
            keep_trailing_newline=True,
            undefined=jinja2.StrictUndefined,
        )

    @classmethod
    def of(cls, config: GatewayConfig) -> Templates:
        return cls(
            config.outbound.templates,
            {t.slug: t.templates for t in config.tenants if t.templates is not None},
        )

    def render(
        self, tenant: str, template_name: str, lang: str = FALLBACK_LANGUAGE, **context: object
    ) -> str:
        # Resolved once per (tenant, language, name): a miss on the tenant's override
        # raised and caught TemplateNotFound for every mail. A reload builds new Templates.
        if not lang.isalpha():  # a language code names a folder: letters only, ever
            lang = FALLBACK_LANGUAGE
        key = (tenant, lang, template_name)
        found = self._resolved.get(key)
        if found is None:
            template = self.env.select_template(
                [
                    f"{tenant}/{lang}/{template_name}",
                    f"{tenant}/{template_name}",
                    f"{lang}/{template_name}",
                    template_name,
                    f"{_BUILTIN_PREFIX}/{lang}/{template_name}",
                    f"{_BUILTIN_PREFIX}/{FALLBACK_LANGUAGE}/{template_name}",
                ]
            )
            found = self._resolved[key] = (template, dict(template.globals))
        template, flat = found
        # What Template.render does, less its cost per mail: the template's globals are a
        # ChainMap, walked twice per render (the context's parent and its globals' keys);
        # here they are a plain dict made once. Errors go through jinja's own handling.
        env = self.env
        ctx = env.context_class(env, {**flat, **context}, template.name, template.blocks, flat)
        try:
            return env.concat(template.root_render_func(ctx))  # type: ignore[attr-defined]
        except Exception:
            env.handle_exception()
            raise  # handle_exception always raises; for the type checker


DEFAULT_TEMPLATES = Templates()
