// Starts Swagger UI from a file, not an inline script, so the page's CSP can say script-src 'self'.
// swagger-ui-bundle.js alone offers the presets "base" and "apis"; the standalone preset (top bar) is
// in a file not shipped, so BaseLayout. No validator: it would send the spec's address to a third party.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  deepLinking: true,
  validatorUrl: null,
});
