#!/bin/sh
# One-shot (service minio-setup): create docindex's bucket and an access key that can use only
# that bucket. Idempotent: an existing bucket, policy or user is updated in place.
set -eu

: "${MINIO_URL:=http://minio:9000}"
: "${MINIO_ROOT_USER:?MINIO_ROOT_USER is required}"
: "${MINIO_ROOT_PASSWORD:?MINIO_ROOT_PASSWORD is required}"
: "${BUCKET:?BUCKET is required}"
: "${APP_ACCESS_KEY:?APP_ACCESS_KEY is required}"
: "${APP_SECRET_KEY:?APP_SECRET_KEY is required}"
POLICY=docindex-bucket-rw

n=1
until mc alias set store "$MINIO_URL" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null; do
  if [ "$n" -ge 30 ]; then
    echo "minio-setup: MinIO at $MINIO_URL does not answer" >&2
    exit 1
  fi
  n=$((n + 1))
  sleep 2
done

mc mb --ignore-existing "store/$BUCKET"
mc anonymous set none "store/$BUCKET"

# Shell built-ins only: the mc image is minimal.
policy='{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
      "Resource": ["arn:aws:s3:::'"$BUCKET"'"]
    },
    {
      "Effect": "Allow",
      "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                 "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
      "Resource": ["arn:aws:s3:::'"$BUCKET"'/*"]
    }
  ]
}'
printf '%s\n' "$policy" > /tmp/policy.json
mc admin policy create store "$POLICY" /tmp/policy.json
mc admin user add store "$APP_ACCESS_KEY" "$APP_SECRET_KEY"
info=$(mc admin user info store "$APP_ACCESS_KEY")
case "$info" in
  *"$POLICY"*) echo "minio-setup: policy $POLICY already attached" ;;
  *) mc admin policy attach store "$POLICY" --user "$APP_ACCESS_KEY" ;;
esac
echo "minio-setup: bucket $BUCKET ready for access key $APP_ACCESS_KEY"
