"""The templates' JSON display: readable, and escaped for HTML."""

from saltext_fleet.webui.app import WebContext, create_app


def test_json_filter_is_readable_and_escaped():
    app = create_app(WebContext(engine=None, vault=None, secret_key=b"k" * 32))
    template = app.jinja_env.from_string("<pre>{{ v|json(indent=2) }}</pre>")
    with app.test_request_context():
        html = template.render(v={"out": "<script>alert(1)</script> & ünïcode", "n": 1})
    assert "<script>" not in html and "&lt;script&gt;" in html and "&amp;" in html
    assert "\\u003c" not in html and "ünïcode" in html
    assert "&#34;n&#34;: 1" in html or "&quot;n&quot;: 1" in html
