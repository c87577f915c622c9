from django.urls import path
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from floor_app.models import Item


class ItemSerializer(serializers.ModelSerializer):
    class Meta:
        model = Item
        fields = ["id", "amount", "currency", "reference", "created_at"]


class Items(APIView):
    def post(self, request):
        serializer = ItemSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        serializer.save()  # the one INSERT
        return Response(serializer.data, status=201)


urlpatterns = [path("items", Items.as_view())]
