"""Strict JSON field types: merchants send JSON, so "1050" is not an amount and 1 is not true."""

import re

import iso3166
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers


class StrictIntegerField(serializers.IntegerField):
    default_error_messages = {"invalid": "Must be an integer (a JSON number without a fraction)."}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictCharField(serializers.CharField):
    default_error_messages = {"invalid": "Must be a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def country_code(value: str) -> str:
    """An ISO 3166-1 alpha-2 code, upper-cased. Checked as sent: two ASCII letters first, so
    that "ßa" is not upper-cased into "SSA" nor "ＵＳ" into "US"; then against the assigned
    codes, so that "XX" is refused."""
    if not re.fullmatch(r"[A-Za-z]{2}", value) or value.upper() not in iso3166.countries_by_alpha2:
        raise serializers.ValidationError(
            "country must be an ISO 3166-1 alpha-2 country code, such as US.", code="invalid")
    return value.upper()


@extend_schema_field({"type": "object", "maxProperties": 20,
                      "additionalProperties": {"type": "string", "maxLength": 500}})
class MetadataField(serializers.Field):
    """Up to 20 string keys (≤ 40 chars) with string values (≤ 500 chars)."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError("metadata must be an object.", code="invalid")
        if len(data) > 20:
            raise serializers.ValidationError("metadata has at most 20 keys.", code="invalid")
        for key, value in data.items():
            if not key or len(key) > 40:
                raise serializers.ValidationError(
                    "metadata keys are 1 to 40 characters.", code="invalid")
            if not isinstance(value, str) or len(value) > 500:
                raise serializers.ValidationError(
                    f"metadata[{key}] must be a string of at most 500 characters.",
                    code="invalid")
        return data

    def to_representation(self, value):
        return value


@extend_schema_field(OpenApiTypes.INT)
class UnixTimeField(serializers.ReadOnlyField):
    """A datetime as Unix seconds."""

    def to_representation(self, value):
        return int(value.timestamp())


def constant(value: str):
    """A read-only field that always renders `value` (the `object` type of each resource)."""

    @extend_schema_field({"type": "string", "enum": [value]})
    class _Constant(serializers.ReadOnlyField):
        def __init__(self, **kwargs):
            super().__init__(source="*", **kwargs)

        def to_representation(self, _):
            return value

    return _Constant()
