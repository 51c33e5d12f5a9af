package httpapi

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"github.com/gin-gonic/gin"
)

// Document is the subset of an OpenAPI 3.1 document that Taki's API needs. It is a plain model so the
// spec is ordinary Go, checked by the compiler and compared against the router by tests.
type Document struct {
	OpenAPI    string                `json:"openapi"`
	Info       Info                  `json:"info"`
	Tags       []Tag                 `json:"tags,omitempty"`
	Security   []SecurityRequirement `json:"security,omitempty"`
	Paths      map[string]PathItem   `json:"paths"`
	Components Components            `json:"components"`
}

// Info describes the API as a whole.
type Info struct {
	Title       string `json:"title"`
	Version     string `json:"version"`
	Description string `json:"description,omitempty"`
}

// Tag groups operations.
type Tag struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
}

// PathItem holds the operations of one path, keyed by lower-case HTTP method as OpenAPI spells them.
type PathItem map[string]*Operation

// Operation is one method on one path.
type Operation struct {
	OperationID string               `json:"operationId"`
	Summary     string               `json:"summary"`
	Description string               `json:"description,omitempty"`
	Tags        []string             `json:"tags,omitempty"`
	Parameters  []Parameter          `json:"parameters,omitempty"`
	RequestBody *RequestBody         `json:"requestBody,omitempty"`
	Responses   map[string]*Response `json:"responses"`
	// Security overrides the document's default; an empty, non-nil slice marks a public operation,
	// hence omitzero (which keeps it) rather than omitempty (which would drop it).
	Security []SecurityRequirement `json:"security,omitzero"`
}

// Parameter is a path, query or header parameter.
type Parameter struct {
	Name        string  `json:"name"`
	In          string  `json:"in"`
	Description string  `json:"description,omitempty"`
	Required    bool    `json:"required,omitempty"`
	Schema      *Schema `json:"schema"`
}

// RequestBody is an operation's body.
type RequestBody struct {
	Description string               `json:"description,omitempty"`
	Required    bool                 `json:"required"`
	Content     map[string]MediaType `json:"content"`
}

// MediaType holds the schema of one content type.
type MediaType struct {
	Schema *Schema `json:"schema"`
}

// Response is one possible answer of an operation.
type Response struct {
	Description string               `json:"description"`
	Headers     map[string]*Header   `json:"headers,omitempty"`
	Content     map[string]MediaType `json:"content,omitempty"`
}

// Header is a response header.
type Header struct {
	Description string  `json:"description,omitempty"`
	Schema      *Schema `json:"schema"`
}

// Components holds the reusable parts of the document.
type Components struct {
	Schemas         map[string]*Schema         `json:"schemas"`
	SecuritySchemes map[string]*SecurityScheme `json:"securitySchemes,omitempty"`
}

// SecurityScheme is a way to authenticate.
type SecurityScheme struct {
	Type        string `json:"type"`
	In          string `json:"in,omitempty"`
	Name        string `json:"name,omitempty"`
	Description string `json:"description,omitempty"`
}

// SecurityRequirement names the schemes that together authenticate a request.
type SecurityRequirement map[string][]string

// Schema is the subset of JSON Schema 2020-12 (OpenAPI 3.1's dialect) the document uses.
type Schema struct {
	Ref                  string             `json:"$ref,omitempty"`
	Type                 SchemaType         `json:"type,omitempty"`
	Format               string             `json:"format,omitempty"`
	Description          string             `json:"description,omitempty"`
	Enum                 []string           `json:"enum,omitempty"`
	Const                string             `json:"const,omitempty"`
	Default              any                `json:"default,omitempty"`
	Pattern              string             `json:"pattern,omitempty"`
	MinLength            *int               `json:"minLength,omitempty"`
	MaxLength            *int               `json:"maxLength,omitempty"`
	Minimum              *int64             `json:"minimum,omitempty"`
	Maximum              *int64             `json:"maximum,omitempty"`
	Properties           map[string]*Schema `json:"properties,omitempty"`
	Required             []string           `json:"required,omitempty"`
	AdditionalProperties *bool              `json:"additionalProperties,omitempty"`
	Items                *Schema            `json:"items,omitempty"`
	OneOf                []*Schema          `json:"oneOf,omitempty"`
	AnyOf                []*Schema          `json:"anyOf,omitempty"`
	AllOf                []*Schema          `json:"allOf,omitempty"`
}

// SchemaType is a JSON Schema type or, for nullable values, a list of types (OpenAPI 3.1 has no
// "nullable": a nullable string is ["string", "null"]).
type SchemaType []string

// MarshalJSON writes a single type as a plain string, the common and most readable form.
func (t SchemaType) MarshalJSON() ([]byte, error) {
	if len(t) == 1 {
		return json.Marshal(t[0])
	}
	return json.Marshal([]string(t))
}

// Route is one method and gin-style path (":id" for a path parameter).
type Route struct {
	Method string
	Path   string
}

func (r Route) String() string { return r.Method + " " + r.Path }

// Routes lists every operation of d as a gin route, sorted by path then method.
func (d *Document) Routes() []Route {
	var routes []Route
	for path, item := range d.Paths {
		for method := range item {
			routes = append(routes, Route{Method: strings.ToUpper(method), Path: ginPath(path)})
		}
	}
	slices.SortFunc(routes, func(a, b Route) int {
		if c := strings.Compare(a.Path, b.Path); c != 0 {
			return c
		}
		return strings.Compare(a.Method, b.Method)
	})
	return routes
}

// ginPath turns an OpenAPI path template ("/users/{id}") into gin's form ("/users/:id").
func ginPath(path string) string {
	segs := strings.Split(path, "/")
	for i, s := range segs {
		if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
			segs[i] = ":" + s[1:len(s)-1]
		}
	}
	return strings.Join(segs, "/")
}

// CompareRoutes reports the routes the router serves that d does not document, and those d documents
// that the router lacks, each as sorted "METHOD /path" strings; both are empty when they agree.
func CompareRoutes(routes gin.RoutesInfo, d *Document) (missingInDoc, missingInRouter []string) {
	inRouter := make(map[string]bool, len(routes))
	for _, r := range routes {
		inRouter[Route{Method: r.Method, Path: r.Path}.String()] = true
	}
	inDoc := make(map[string]bool)
	for _, r := range d.Routes() {
		inDoc[r.String()] = true
	}
	for r := range inRouter {
		if !inDoc[r] {
			missingInDoc = append(missingInDoc, r)
		}
	}
	for r := range inDoc {
		if !inRouter[r] {
			missingInRouter = append(missingInRouter, r)
		}
	}
	slices.Sort(missingInDoc)
	slices.Sort(missingInRouter)
	return missingInDoc, missingInRouter
}

// ServeSpec serves Spec() as JSON. The document is built and encoded once, when the route is set up.
func ServeSpec() gin.HandlerFunc {
	body, err := json.Marshal(Spec())
	return func(c *gin.Context) {
		if err != nil {
			WriteError(c, err)
			return
		}
		c.Data(http.StatusOK, "application/json", body)
	}
}
