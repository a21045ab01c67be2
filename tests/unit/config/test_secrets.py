"""Secret values never appear in an error, a repr or the validate report."""

from __future__ import annotations

import json

from supervisor.cli.validate import report, summary
from supervisor.config import LoadResult
from tests.unit.config.helpers import Tree

SECRETS = {
    "BEARER": "s3cret-bearer-value",
    "APIKEY": "s3cret-apikey-value",
    "CLIENT_ID": "s3cret-client-id",
    "CLIENT_SECRET": "s3cret-client-secret",
    "HEADER": "s3cret-header-value",
    "CONFIG": "s3cret-config-value",
    "ENV": "s3cret-env-value",
}
LITERAL = ("987654321-literal-token", "literal-header-in-a-list", "literal-api-key-x")


def _everything_shown(result: LoadResult) -> str:
    shown = [repr(result), str(result), json.dumps(report(result)), summary(result)]
    shown += [str(error) for error in result.errors]
    shown += [json.dumps(error.to_dict()) for error in result.errors]
    shown += [repr(ext) for ext in result.registry.extensions]
    shown += [str(ext) for ext in result.registry.extensions]
    return "\n".join(shown)


def test_secrets_do_not_leak(tree: Tree) -> None:
    tree.servers(
        """
        servers:
          - name: bearer
            type: remote
            url: https://a.example
            auth: {type: bearer, token: '${BEARER}'}
            headers: {X-Secret: '${HEADER}'}
          - name: apikey
            type: remote
            url: https://a.example
            auth: {type: apikey, key: '${APIKEY}'}
          - name: oauth
            type: remote
            url: https://a.example
            auth: {type: oauth2, clientId: '${CLIENT_ID}', clientSecret: '${CLIENT_SECRET}'}
          - name: local
            type: local
            path: servers/weather
            config: {apiKey: '${CONFIG}'}
            env: {API_KEY: '${ENV}'}
        """
    )
    # The same secrets in entries that are invalid for some other reason.
    tree.modules(
        """
        modules:
          - name: bad-bearer
            type: remote
            url: ftp://a.example
            moduleType: plugin
            timeout: soon
            auth: {type: bearer, token: '${BEARER}'}
            headers: {X-Secret: '${HEADER}', X-Broken: ['${HEADER}']}
          - name: bad-oauth
            type: remote
            url: https://a.example
            moduleType: plugin
            limits: {memory: lots}
            auth: {type: oauth2, clientId: '${CLIENT_ID}', clientSecret: '${CLIENT_SECRET}',
                   tokenUrl: 'ftp://${CLIENT_SECRET}@x'}
          - name: bad-local
            type: local
            path: modules/backup
            moduleType: daemon
            restart: {policy: sometimes}
            config: {apiKey: '${CONFIG}', other: '${UNSET}'}
            env: {API_KEY: '${ENV}', 1BAD: '${ENV}'}
        """
    )
    result = tree.load(SECRETS)
    assert result.registry.names == ("bearer", "apikey", "oauth", "local")
    assert set(result.invalid) == {"bad-bearer", "bad-oauth", "bad-local"}
    shown = _everything_shown(result)
    for value in SECRETS.values():
        assert value not in shown
    assert "'<redacted>'" in shown


def test_literal_secrets_in_wrongly_typed_fields_do_not_leak(tree: Tree) -> None:
    tree.servers(
        f"""
        servers:
          - name: a
            type: remote
            url: https://a.example
            auth: {{type: bearer, token: {LITERAL[0].split("-")[0]}}}
            headers: {{X-List: [{LITERAL[1]}]}}
          - name: b
            type: remote
            url: https://a.example
            auth: {{type: apikey, key: [{LITERAL[2]}]}}
        """
    )
    result = tree.load()
    assert [error.field for error in result.errors] == [
        "servers[0].auth.token",
        "servers[0].headers.X-List",
        "servers[1].auth.key",
    ]
    shown = _everything_shown(result)
    for value in (LITERAL[0].split("-")[0], LITERAL[1], LITERAL[2]):
        assert value not in shown
