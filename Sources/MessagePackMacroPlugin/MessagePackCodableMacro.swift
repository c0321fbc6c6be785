import SwiftCompilerPlugin
import SwiftDiagnostics
import SwiftSyntax
import SwiftSyntaxMacros

/// `@MessagePackCodable` and `@MessagePackCodable(layout: .array)`: an extension that makes a struct
/// `MessagePackEncodable` and `MessagePackDecodable`, coding its stored properties in declaration
/// order. The map layout produces the same bytes as the struct's synthesized `Codable` conformance
/// through `MessagePackEncoder` (absent keys for nil optionals) and accepts what its decoding
/// accepts; the array layout writes the properties positionally.
public struct MessagePackCodableMacro: ExtensionMacro {
    public static func expansion(
        of node: AttributeSyntax,
        attachedTo declaration: some DeclGroupSyntax,
        providingExtensionsOf type: some TypeSyntaxProtocol,
        conformingTo protocols: [TypeSyntax],
        in context: some MacroExpansionContext
    ) throws -> [ExtensionDeclSyntax] {
        do {
            return [try expansion(of: node, attachedTo: declaration, providingExtensionsOf: type, conformingTo: protocols)]
        } catch let refusal as Refusal {
            context.diagnose(Diagnostic(node: refusal.node, message: refusal))
            return []
        }
    }

    static func expansion(
        of node: AttributeSyntax, attachedTo declaration: some DeclGroupSyntax,
        providingExtensionsOf type: some TypeSyntaxProtocol, conformingTo protocols: [TypeSyntax]
    ) throws -> ExtensionDeclSyntax {
        guard let structure = declaration.as(StructDeclSyntax.self) else {
            let kind = declaration.is(EnumDeclSyntax.self) ? "an enum" : declaration.is(ClassDeclSyntax.self) ? "a class"
                : declaration.is(ActorDeclSyntax.self) ? "an actor" : "this declaration"
            throw Refusal(node, "@MessagePackCodable applies to structs only, not to \(kind); write its MessagePackEncodable and MessagePackDecodable conformances by hand, or use plain Codable")
        }
        for member in structure.memberBlock.members {
            let name = member.decl.as(EnumDeclSyntax.self)?.name ?? member.decl.as(StructDeclSyntax.self)?.name
                ?? member.decl.as(TypeAliasDeclSyntax.self)?.name
            if let name, name.text == "CodingKeys" {
                throw Refusal(Syntax(name), "@MessagePackCodable does not read CodingKeys yet: remove 'CodingKeys' (keys are then the property names), or use plain Codable")
            }
        }
        let fields = try storedProperties(of: structure)
        let isArray = layoutIsArray(node)
        // The members are as visible as the struct (a public struct's conformance needs public ones).
        let access = structure.modifiers.first { ["public", "package"].contains($0.name.text) }.map { $0.name.text + " " } ?? ""
        let body = isArray ? arrayLayout(fields, access) : mapLayout(fields, access)
        let conformances = protocols.isEmpty ? "" : ": " + protocols.map { $0.trimmedDescription }.joined(separator: ", ")
        let decl: DeclSyntax = "extension \(type.trimmed)\(raw: conformances) {\n\(raw: body)\n}"
        return decl.cast(ExtensionDeclSyntax.self)
    }

    /// A stored property: its name, its type as written with any `?` removed, and whether it is
    /// decoded (a `let` with a default value is only encoded, as with synthesized `Codable`).
    struct Field {
        /// As written (`` `default` `` keeps its backticks).
        let name: String
        let type: String?
        let isOptional: Bool
        let isDecoded: Bool
        /// The coding key, and the local that holds the decoded value.
        var key: String { name.filter { $0 != "`" } }
        var local: String { "_" + key }
    }

    static func storedProperties(of structure: StructDeclSyntax) throws -> [Field] {
        var fields: [Field] = []
        for member in structure.memberBlock.members {
            guard let variable = member.decl.as(VariableDeclSyntax.self),
                  !variable.modifiers.contains(where: { ["static", "class", "lazy"].contains($0.name.text) }) else { continue }
            let isLet = variable.bindingSpecifier.tokenKind == .keyword(.let)
            let bindings = Array(variable.bindings)
            for (index, binding) in bindings.enumerated() {
                guard let pattern = binding.pattern.as(IdentifierPatternSyntax.self), !isComputed(binding) else { continue }
                // `var a, b: Int`: `a` takes the type written after `b`.
                let annotation = bindings[index...].first { $0.typeAnnotation != nil || $0.initializer != nil }?.typeAnnotation?.type
                let hasDefault = binding.initializer != nil
                let name = pattern.identifier.text
                guard let annotation else {
                    if isLet && hasDefault {
                        fields.append(Field(name: name, type: nil, isOptional: false, isDecoded: false))
                        continue
                    }
                    throw Refusal(Syntax(binding), "@MessagePackCodable needs the type of '\(pattern.identifier.text)' written out (\(pattern.identifier.text): Type)")
                }
                let (type, isOptional) = unwrapped(annotation)
                fields.append(Field(name: name, type: type, isOptional: isOptional, isDecoded: !(isLet && hasDefault)))
            }
        }
        return fields
    }

    static func isComputed(_ binding: PatternBindingSyntax) -> Bool {
        switch binding.accessorBlock?.accessors {
        case nil: false
        case .getter: true
        case .accessors(let accessors):
            accessors.contains { [.keyword(.get), .keyword(.set), .keyword(._read), .keyword(._modify)].contains($0.accessorSpecifier.tokenKind) }
        }
    }

    /// `T?`, `T!` and `Optional<T>` as (`T`, true); anything else as itself.
    static func unwrapped(_ type: TypeSyntax) -> (String, Bool) {
        if let optional = type.as(OptionalTypeSyntax.self) { return (optional.wrappedType.trimmedDescription, true) }
        if let optional = type.as(ImplicitlyUnwrappedOptionalTypeSyntax.self) { return (optional.wrappedType.trimmedDescription, true) }
        if let named = type.as(IdentifierTypeSyntax.self), named.name.text == "Optional",
           let argument = named.genericArgumentClause?.arguments.first, named.genericArgumentClause?.arguments.count == 1 {
            return (argument.argument.trimmedDescription, true)
        }
        return (type.trimmedDescription, false)
    }

    static func layoutIsArray(_ node: AttributeSyntax) -> Bool {
        guard case .argumentList(let arguments) = node.arguments else { return false }
        return arguments.contains { $0.label?.text == "layout" && $0.expression.as(MemberAccessExprSyntax.self)?.declName.baseName.text == "array" }
    }

    /// A map keyed by the property names, nil optionals left out.
    static func mapLayout(_ fields: [Field], _ access: String) -> String {
        let required = fields.filter { !$0.isOptional }.count
        let count = ([String(required)] + fields.filter(\.isOptional).map { "(self.\($0.name) == nil ? 0 : 1)" }).joined(separator: " + ")
        var encode = ["writer.writeMapHeader(count: \(count))"]
        for field in fields {
            if field.isOptional {
                encode.append("if let value = self.\(field.name) {\n    writer.write(key: \"\(field.key)\")\n    try writer.encode(value)\n}")
            } else {
                encode.append("writer.write(key: \"\(field.key)\")\ntry writer.encode(self.\(field.name))")
            }
        }
        let decoded = fields.filter(\.isDecoded)
        var decode: [String]
        if decoded.isEmpty {
            decode = ["_ = try object.fields(of: Self.self)"]
        } else {
            decode = decoded.map { "var \($0.local): \($0.type!)? = nil" }
            let cases = decoded.map { field in
                field.isOptional
                    ? "case \"\(field.key)\": \(field.local) = try value.isNil ? nil : value.decode(\(field.type!).self)"
                    : "case \"\(field.key)\": \(field.local) = try value.decode(\(field.type!).self)"
            }
            decode.append("for (key, value) in try object.fields(of: Self.self) {\n    switch key {\n    \(cases.joined(separator: "\n    "))\n    default: continue\n    }\n}")
            decode += decoded.map {
                $0.isOptional ? "self.\($0.name) = \($0.local)" : "self.\($0.name) = try object.required(\($0.local), forKey: \"\($0.key)\")"
            }
        }
        return members(encode, decode, access)
    }

    /// An array of the properties in declaration order; nil optionals are nil.
    static func arrayLayout(_ fields: [Field], _ access: String) -> String {
        let encode = ["writer.writeArrayHeader(count: \(fields.count))"] + fields.map { "try writer.encode(self.\($0.name))" }
        let decoded = fields.enumerated().filter { $0.element.isDecoded }
        var decode = [decoded.isEmpty ? "_ = try object.elements(of: Self.self)" : "let elements = try object.elements(of: Self.self)"]
        decode += decoded.map { index, field in
            field.isOptional
                ? "self.\(field.name) = try elements.elementIfPresent(\(index)).map { try $0.decode(\(field.type!).self) }"
                : "self.\(field.name) = try elements.element(\(index)).decode(\(field.type!).self)"
        }
        return members(encode, decode, access)
    }

    static func members(_ encode: [String], _ decode: [String], _ access: String) -> String {
        func indented(_ lines: [String]) -> String {
            lines.joined(separator: "\n").split(separator: "\n", omittingEmptySubsequences: false).map { "        " + $0 }.joined(separator: "\n")
        }
        return """
                \(access)func encode(to writer: inout MessagePack.MessagePackWriter) throws {
            \(indented(encode))
                }
                \(access)init(from object: MessagePack.MessagePackObject) throws {
            \(indented(decode))
                }
            """
    }

    /// A diagnostic that stops the expansion.
    struct Refusal: Error, DiagnosticMessage {
        let node: Syntax
        let message: String
        var diagnosticID: MessageID { MessageID(domain: "MessagePackCodable", id: "refused") }
        var severity: DiagnosticSeverity { .error }
        init(_ node: some SyntaxProtocol, _ message: String) {
            self.node = Syntax(node)
            self.message = message
        }
    }
}

@main
struct MessagePackMacroPlugin: CompilerPlugin {
    let providingMacros: [any Macro.Type] = [MessagePackCodableMacro.self]
}
