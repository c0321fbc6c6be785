import MessagePackMacroPlugin
import SwiftSyntaxMacroExpansion
import SwiftSyntaxMacrosGenericTestSupport
import Testing

/// What `@MessagePackCodable` expands to, and what it refuses.
@Suite("@MessagePackCodable expansions")
struct ExpansionTests {
    let macros = ["MessagePackCodable": MacroSpec(type: MessagePackCodableMacro.self, conformances: ["MessagePackEncodable", "MessagePackDecodable"])]

    func expect(_ source: String, _ expanded: String, diagnostics: [DiagnosticSpec] = [], sourceLocation: SourceLocation = #_sourceLocation) {
        assertMacroExpansion(source, expandedSource: expanded, diagnostics: diagnostics, macroSpecs: macros) { failure in
            Issue.record(Comment(rawValue: failure.message), sourceLocation: sourceLocation)
        }
    }

    @Test("a map keyed by the stored properties; nil optionals left out; a let with a value only encoded")
    func mapLayout() {
        expect(
            """
            @MessagePackCodable
            public struct Point {
                static var origin = Point(x: 0, y: 0)
                var x: Int
                var y: Int = 0
                let kind = "point"
                var label: String?
                var double: Int { x * 2 }
            }
            """,
            """
            public struct Point {
                static var origin = Point(x: 0, y: 0)
                var x: Int
                var y: Int = 0
                let kind = "point"
                var label: String?
                var double: Int { x * 2 }
            }

            extension Point: MessagePackEncodable, MessagePackDecodable {
                public func encode(to writer: inout MessagePack.MessagePackWriter) throws {
                    writer.writeMapHeader(count: 3 + (self.label == nil ? 0 : 1))
                    writer.write(key: "x")
                    try writer.encode(self.x)
                    writer.write(key: "y")
                    try writer.encode(self.y)
                    writer.write(key: "kind")
                    try writer.encode(self.kind)
                    if let value = self.label {
                        writer.write(key: "label")
                        try writer.encode(value)
                    }
                }
                public init(from object: MessagePack.MessagePackObject) throws {
                    var _x: Int? = nil
                    var _y: Int? = nil
                    var _label: String? = nil
                    for (key, value) in try object.fields(of: Self.self) {
                        switch key {
                        case "x":
                            _x = try value.decode(Int.self)
                        case "y":
                            _y = try value.decode(Int.self)
                        case "label":
                            _label = try value.isNil ? nil : value.decode(String.self)
                        default:
                            continue
                        }
                    }
                    self.x = try object.required(_x, forKey: "x")
                    self.y = try object.required(_y, forKey: "y")
                    self.label = _label
                }
            }
            """)
    }

    @Test("the array layout: the properties by position, a missing trailing optional is nil")
    func arrayLayout() {
        expect(
            """
            @MessagePackCodable(layout: .array)
            struct Request {
                var id: Int
                var params: [String: Double]
                var note: Optional<String>
            }
            """,
            """
            struct Request {
                var id: Int
                var params: [String: Double]
                var note: Optional<String>
            }

            extension Request: MessagePackEncodable, MessagePackDecodable {
                func encode(to writer: inout MessagePack.MessagePackWriter) throws {
                    writer.writeArrayHeader(count: 3)
                    try writer.encode(self.id)
                    try writer.encode(self.params)
                    try writer.encode(self.note)
                }
                init(from object: MessagePack.MessagePackObject) throws {
                    let elements = try object.elements(of: Self.self)
                    self.id = try elements.element(0).decode(Int.self)
                    self.params = try elements.element(1).decode([String: Double].self)
                    self.note = try elements.elementIfPresent(2).map {
                        try $0.decode(String.self)
                    }
                }
            }
            """)
    }

    @Test("enums, classes, CodingKeys and a property without a type are refused with a diagnostic", arguments: [
        ("enum Shape {\n    case circle\n}", 1, 1,
         "@MessagePackCodable applies to structs only, not to an enum; write its MessagePackEncodable and MessagePackDecodable conformances by hand, or use plain Codable"),
        ("class Box {\n    var x: Int = 1\n}", 1, 1,
         "@MessagePackCodable applies to structs only, not to a class; write its MessagePackEncodable and MessagePackDecodable conformances by hand, or use plain Codable"),
        ("struct Keyed {\n    var x: Int\n    enum CodingKeys: String, CodingKey {\n        case x = \"X\"\n    }\n}", 4, 10,
         "@MessagePackCodable does not read CodingKeys yet: remove 'CodingKeys' (keys are then the property names), or use plain Codable"),
        ("struct Untyped {\n    var x = 1\n}", 3, 9, "@MessagePackCodable needs the type of 'x' written out (x: Type)"),
    ])
    func refusals(declaration: String, line: Int, column: Int, message: String) {
        expect("@MessagePackCodable\n" + declaration, declaration, diagnostics: [DiagnosticSpec(message: message, line: line, column: column)])
    }
}
